"""model.onnx: the student in FP32 ONNX (kdforge.export.onnx_export), which every other file is made from."""

from kdforge.export.artifacts._onnxruntime import OnnxRuntimeFile
from kdforge.export.artifacts.base import Built, ExportJob, register_artifact


@register_artifact
class OnnxRuntimeFp32(OnnxRuntimeFile):
    name, suffix, aliases = "onnxruntime", ".onnx", ("fp32",)

    def build(self, job: ExportJob) -> Built:
        from kdforge.export.onnx_export import export_onnx, onnx_flavour

        e = job.export
        path = export_onnx(job.model, job.example(), self.path(job), e.opset, e.portable)
        size, flavour = path.stat().st_size, onnx_flavour(path)
        return Built([path], {"onnx_bytes": size, "flavour": flavour},
                     f"{path.name} ({size / 1024:.0f} KiB, {flavour}), onnx checker passed")
