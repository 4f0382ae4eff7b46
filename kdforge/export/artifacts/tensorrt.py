"""model.engine: a TensorRT engine (kdforge.export.tensorrt) at the student's precision, built from
the ONNX file whose tensors carry it (TensorRT networks are strongly typed): model.int8.tensorrt.onnx
(signed symmetric Q/DQ) for an INT8 student, model.fp16.onnx for an FP16 one, else model.onnx with
TF32 off. AdderNets run on the adder plugin in fp32."""

from pathlib import Path

from kdforge.export.artifacts.base import Artifact, Built, ExportJob, Runner, register_artifact
from kdforge.train.models.families import ADDER


@register_artifact
class TensorRTEngine(Artifact):
    name, suffix, runtime, needs = "tensorrt", ".engine", "TensorRT", ("onnxruntime",)

    def refusal(self, family) -> str | None:
        return None

    def shipped_precision(self, job: ExportJob) -> str:
        return "fp32" if job.family is ADDER else job.precision

    def build(self, job: ExportJob) -> Built:
        from kdforge.export.tensorrt import build_engine, require_tensorrt

        require_tensorrt()  # before writing the engine's source file
        source, how = self._source(job)
        engine = build_engine(source, self.path(job), (2, *job.input_shape), job.largest_batch)
        return Built([source, engine], {"tensorrt": True}, f"{engine.name} ({how}, from {source.name})")

    def _source(self, job: ExportJob) -> tuple[Path, str]:
        from kdforge.export.artifacts.onnxruntime_fp16 import fp16_file
        from kdforge.export.int8_cpu import TENSORRT
        from kdforge.export.quantize import quantize_int8

        precision = self.shipped_precision(job)
        if job.family is ADDER:
            return job.path(".onnx"), "fp32: the adder plugin computes in fp32"
        if precision == "int8":
            images = job.calibration_images("an INT8 engine").numpy()
            return quantize_int8(job.path(".onnx"), job.path(".int8.tensorrt.onnx"), images, TENSORRT, job.export.calibration,
                                 job.range_overrides(images)), \
                "int8, explicit Q/DQ"
        if precision == "fp16":
            return fp16_file(job), "fp16"
        return job.path(".onnx"), "fp32, TF32 off"

    def open(self, path: Path, threads: int) -> Runner:
        from kdforge.export.tensorrt import engine_runner

        return Runner(engine_runner(path), {"backend": "tensorrt"})

    def timers(self, path: Path, input_shape: tuple, threads: int):
        """Host latency ("tensorrt") and the GPU's time between CUDA events ("tensorrt_gpu")."""
        from kdforge.export.tensorrt import engine_timers

        run = self.open(path, threads)
        return (lambda batch: engine_timers(run, (batch, *input_shape))), run.info

    def graph(self, path: Path) -> Path:
        """An engine is its ONNX graph compiled: the same graph, the same engine."""
        return path.with_suffix(".onnx")
