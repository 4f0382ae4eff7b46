"""OpenVINO's CPU plugin running kdforge's standard ONNX files: `openvino` (model.onnx; an AdderNet's
own adder nodes are not OpenVINO's, so an AdderNet gets model.portable.onnx, its adder layers in
standard operators, unless export.portable already made model.onnx so), `openvino-fp16`
(model.fp16.onnx) and `openvino-int8` (model.int8.onnx, ONNX Runtime's Q/DQ file).

The inference precision is set to f32 explicitly: the CPU plugin's default on CPUs with bf16
(AVX-512 BF16, AMX) is bf16, where an adder layer's long sums of |x - w| lose their low bits
(measured on an AVX-512 machine: a portable AdderNet's top-1 agreed with f32 on 75% of random
inputs at the bf16 hint). The compiled model's own precision is recorded with each figure."""

from pathlib import Path

from kdforge.export.artifacts.base import Artifact, Built, ExportJob, Runner, register_artifact
from kdforge.train.models.families import ADDER

INFERENCE_PRECISION = "f32"


def compile_onnx(path: Path, threads: int):
    """The file compiled for OpenVINO's CPU plugin at f32, `threads` inference threads; its
    graph is first read by kdforge's own loader, which refuses external data (a file may come from anyone)."""
    import openvino as ov

    from kdforge.errors import UserError
    from kdforge.export.onnx_file import load_model

    load_model(path)
    core = ov.Core()
    try:
        return core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise UserError(f"OpenVINO cannot compile {path}: {reason}; the file needs an operator OpenVINO lacks.") from None


class OpenVinoFile(Artifact):
    runtime = "OpenVINO"

    def open(self, path: Path, threads: int) -> Runner:
        import numpy as np
        import openvino as ov

        compiled = compile_onnx(path, threads)
        request = compiled.create_infer_request()

        def run(images: np.ndarray) -> np.ndarray:
            # the input shared, not copied, and no dict of outputs: 0.15 ms a call for the demo's ResNet-8 against
            # 0.27 ms through request.infer({0: x}) (AMD EPYC Zen 3, avx2 fma)
            x = np.ascontiguousarray(images, dtype=np.float32)  # alive until the call returns: OpenVINO reads it in place
            request.set_input_tensor(ov.Tensor(x, shared_memory=True))
            request.infer()
            return request.get_output_tensor().data.copy()
        return Runner(run, {"backend": "openvino", "device": "CPU",
                            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()})


@register_artifact
class OpenVinoFp32(OpenVinoFile):
    name, suffix, needs = "openvino", ".onnx", ("onnxruntime",)

    def path(self, job: ExportJob) -> Path:
        return job.path(".portable.onnx") if job.family is ADDER and not job.export.portable else job.path(".onnx")

    def build(self, job: ExportJob) -> Built | None:
        from kdforge.export.onnx_export import export_onnx

        if self.path(job) == job.path(".onnx"):
            return None
        path = export_onnx(job.model, job.example(), self.path(job), job.export.opset, portable=True)
        return Built([path], {"portable_onnx_bytes": path.stat().st_size},
                     f"{path.name} ({path.stat().st_size / 1024:.0f} KiB, standard operators for OpenVINO)")


@register_artifact
class OpenVinoFp16(OpenVinoFile):
    name, suffix, precision, needs = "openvino-fp16", ".fp16.onnx", "fp16", ("onnxruntime-fp16",)

    def build(self, job: ExportJob) -> None:
        return None


@register_artifact
class OpenVinoInt8(OpenVinoFile):
    name, suffix, precision, needs = "openvino-int8", ".int8.onnx", "int8", ("onnxruntime-int8",)

    def refusal(self, family) -> str | None:
        if family is ADDER:
            return ("an AdderNet's INT8 file holds kdforge's own QLinearAdderConv2d nodes, which are not OpenVINO's; "
                    "deploy openvino for its portable FP32 file")
        return super().refusal(family)

    def build(self, job: ExportJob) -> None:
        return None
