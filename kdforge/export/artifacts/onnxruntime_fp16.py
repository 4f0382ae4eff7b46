"""model.fp16.onnx: fp16 weights and arithmetic, fp32 input and logits (kdforge.export.fp16), in ONNX Runtime."""

from pathlib import Path

from kdforge.export.artifacts._onnxruntime import OnnxRuntimeFile
from kdforge.export.artifacts.base import Built, ExportJob, register_artifact


def fp16_file(job: ExportJob) -> Path:
    """The student's fp16 ONNX file, exported once (a TensorRT fp16 engine is built from it too)."""
    from kdforge.export.fp16 import Float16Student
    from kdforge.export.onnx_export import export_onnx

    path = job.path(".fp16.onnx")
    if "fp16_file" not in job.cache:
        job.cache["fp16_file"] = export_onnx(Float16Student(job.model), job.example(), path, job.export.opset, job.export.portable)
    return path


@register_artifact
class OnnxRuntimeFp16(OnnxRuntimeFile):
    name, suffix, precision, aliases = "onnxruntime-fp16", ".fp16.onnx", "fp16", ("fp16",)

    def build(self, job: ExportJob) -> Built:
        path = fp16_file(job)
        return Built([path], {"fp16_onnx_bytes": path.stat().st_size}, f"{path.name} ({path.stat().st_size / 1024:.0f} KiB)")
