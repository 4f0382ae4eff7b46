"""model.int8.onnx in ONNX Runtime: adder layers on kdforge's integer node (exact integer sums on
every CPU, kdforge.export.adder_int8), CNN and binary students by ONNX Runtime's quantizer in the
integer scheme of `export.int8_cpu`, searched until the file passes the INT8 gate
(kdforge.export.int8_search)."""

from pathlib import Path

from kdforge.export.artifacts._onnxruntime import OnnxRuntimeFile
from kdforge.export.artifacts.base import Built, ExportJob, Runner, register_artifact
from kdforge.train.models.families import ADDER


def int8_adder_twin(job: ExportJob):
    """The PyTorch INT8 twin of an AdderNet student (the same calibration as its export, so the
    same scales): what its model.int8.onnx is exported from and verified against."""
    from kdforge.export.adder_int8 import quantize_adder_layers

    if "int8_adder_twin" not in job.cache:
        job.cache["int8_adder_twin"] = quantize_adder_layers(job.model, job.calibration_images("an INT8 AdderNet"))
    return job.cache["int8_adder_twin"]


@register_artifact
class OnnxRuntimeInt8(OnnxRuntimeFile):
    name, suffix, precision, aliases = "onnxruntime-int8", ".int8.onnx", "int8", ("int8",)

    def build(self, job: ExportJob) -> Built:
        from kdforge.export.int8_cpu import mark, target_of
        from kdforge.export.int8_search import Gate, search_int8
        from kdforge.export.onnx_export import export_onnx

        path, e, v = self.path(job), job.export, job.verify
        images = job.calibration_images("an INT8 file")
        if job.family is ADDER:
            export_onnx(int8_adder_twin(job), job.example(), path, e.opset, e.portable)
            mark(path, "any", "uint8 SAD, exact on every CPU", f"minmax, {len(images)} images")
            return self._built(path, {"calibration_images": len(images), "int8_cpu": "any"}, "integer adder layers")
        target = target_of(e.int8_cpu)
        val_images, val_labels = job.validation()
        found = search_int8(job.path(".onnx"), path, target, e.calibration, images.numpy(), val_images, val_labels,
                            Gate(v.int8_min_agreement, v.int8_max_accuracy_drop), e.int8_max_float_macs,
                            range_overrides=job.range_overrides(images.numpy()))
        how = f"ONNX Runtime QDQ {found['scheme']} for {target}, {e.calibration}"
        if job.input_ranges:
            how += f" but {len(job.input_ranges)} layer input ranges learned in QAT"
        if found["float_layers"]:
            how += "; in float: " + ", ".join(f"{f['layer']} ({f['mac_share']:.1%} of the MACs)" for f in found["float_layers"])
        return self._built(path, {"calibration_images": len(images), "calibration": e.calibration, "int8_cpu": target,
                                  "int8_scheme": found["scheme"], "int8_search": found}, how)

    @staticmethod
    def _built(path: Path, about: dict, how: str) -> Built:
        size = path.stat().st_size
        return Built([path], {"int8_onnx_bytes": size, **about},
                     f"{path.name} ({size / 1024:.0f} KiB, {how}, calibrated on {about['calibration_images']} training images)")

    def verify(self, job: ExportJob, run: Runner) -> dict[str, dict]:
        """The gate, the CPU the file was made for against this one, and for an AdderNet the integer
        kernels against PyTorch's integer reference."""
        from kdforge.export.int8_cpu import targets
        from kdforge.export.verify import verify_backend

        results = super().verify(job, run)
        results[self.name]["cpu"] = targets(self.path(job))
        if job.family is ADDER:
            v, name = job.verify, f"{self.name} vs pytorch-int8"
            results[name] = verify_backend(int8_adder_twin(job), run, job.test, v.int8_reference_atol, v.min_agreement, name,
                                           atol_key="verify.int8_reference_atol")
        return results

