"""INT8 students: static quantization of an exported model.onnx with ONNX Runtime's own tooling,
written beside it as model.int8.onnx.

QDQ format (QuantizeLinear/DequantizeLinear pairs that runtimes fuse into integer kernels),
symmetric per-channel int8 weights and uint8 activations (U8S8), whose ranges are calibrated
(MinMax) on `export.calibration_images` images of the training split, after ONNX Runtime's
pre-processing (shape inference and graph optimisation). U8S8 is what ONNX Runtime's x86 kernels
take (u8 x s8 products, VPMADDUBSW / VNNI's VPDPBUSD; ONNX Runtime's "Quantize ONNX models",
data type selection): with int8 activations (S8S8) its optimiser left 12 of ResNet-20's 21
convolutions in float between DequantizeLinear and Transpose nodes, with uint8 all 21 become
QLinearConv and the residual additions QLinearAdd (benchmarks/low_precision_end_to_end.py).
This file is for ONNX Runtime: TensorRT's explicit quantisation takes signed, symmetric int8
Q/DQ only, which `for_tensorrt` writes (calibrated on the same images) for the INT8 engine. CNN and binary students only: ONNX Runtime's tooling
has no integer form of kdforge::AdderConv2d; AdderNet students are quantized in PyTorch instead
(kdforge.export.adder_int8).
"""

from pathlib import Path

import numpy as np
import onnx

from kdforge.atomic import atomic_path
from kdforge.errors import UserError


class _Images:
    """ONNX Runtime's CalibrationDataReader protocol over an array of images, 32 at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + 32]} for i in range(0, len(images), 32)])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, int8_path: Path, images: np.ndarray, for_tensorrt: bool = False) -> Path:
    """Writes the INT8 QDQ twin of `fp32_path` to `int8_path`, calibrated on `images` (N, C, H, W):
    U8S8 for ONNX Runtime, or with `for_tensorrt` signed, symmetric int8 activations (zero point 0),
    the only Q/DQ TensorRT's explicit quantisation takes."""
    from kdforge.export.ort import ort  # noqa: F401 - says which extra installs ONNX Runtime where it is missing
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_path))
    if any(node.domain == "kdforge" for node in model.graph.node):
        raise UserError(f"{fp32_path} has adder layers, which ONNX Runtime's quantizer cannot quantize; "
                        f"kdforge.export.adder_int8 quantizes AdderNet students.")
    input_name = model.graph.input[0].name
    images = np.ascontiguousarray(images, dtype=np.float32)
    with atomic_path(Path(int8_path)) as tmp:
        prepared = tmp.with_name(tmp.name + ".pre")
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
            activations = QuantType.QInt8 if for_tensorrt else QuantType.QUInt8
            quantize_static(str(prepared), str(tmp), _Images(images, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=activations, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True})
        finally:
            prepared.unlink(missing_ok=True)
    return Path(int8_path)
