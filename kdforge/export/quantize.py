"""INT8 students: static quantization of an exported model.onnx with ONNX Runtime's own tooling,
written beside it as model.int8.onnx.

QDQ format (QuantizeLinear/DequantizeLinear pairs that runtimes fuse into integer kernels),
symmetric per-channel weights, activation ranges calibrated (`export.calibration`: MinMax,
Percentile or Entropy) on `export.calibration_images` images of the training split, after ONNX
Runtime's pre-processing (shape inference and graph optimisation). The integer types follow the
CPU that will run the file (kdforge.export.int8_cpu): U8S8 on x86, where ONNX Runtime's optimiser
turns every convolution into QLinearConv and the residual additions into QLinearAdd (with int8
activations it left 12 of ResNet-20's 21 convolutions in float between DequantizeLinear and
Transpose nodes, benchmarks/low_precision_end_to_end.py), with 7-bit weights where the CPU lacks
VNNI; S8S8 on ARM. TensorRT's explicit quantisation takes signed, symmetric int8 Q/DQ only,
which the `TENSORRT` scheme writes (calibrated on the same images) for the INT8 engine. CNN and binary students only: ONNX Runtime's tooling
has no integer form of kdforge::AdderConv2d; AdderNet students are quantized in PyTorch instead
(kdforge.export.adder_int8).
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from kdforge.atomic import atomic_path
from kdforge.errors import UserError
from kdforge.export.int8_cpu import IntegerScheme, mark


class _Images:
    """ONNX Runtime's CalibrationDataReader protocol over an array of images, 32 at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + 32]} for i in range(0, len(images), 32)])

    def get_next(self):
        return next(self._batches, None)


RangeOverrides = Callable[[Path], dict]  # a prepared file -> its TensorQuantOverrides


def no_overrides(prepared: Path) -> dict:
    return {}


def quantize_int8(fp32_path: Path, int8_path: Path, images: np.ndarray, scheme: IntegerScheme,
                  calibration: str = "minmax", range_overrides: RangeOverrides = no_overrides) -> Path:
    """Writes the INT8 QDQ twin of `fp32_path` to `int8_path`, its activation ranges calibrated on
    `images` (N, C, H, W) by `calibration` but where `range_overrides` of the prepared file sets
    them, in the integer `scheme` of the CPU (or TensorRT) that will run it, which its
    metadata_props name."""
    with prepared_for_quantization(fp32_path, Path(int8_path).parent) as prepared:
        return quantize_prepared(prepared, int8_path, images, scheme, calibration, overrides=range_overrides(prepared))


@contextlib.contextmanager
def _working_directory(folder: str):
    """contextlib.chdir, which Python 3.10 lacks."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def prepared_for_quantization(fp32_path: Path, scratch: Path):
    """ONNX Runtime's pre-processing of `fp32_path` (shape inference, graph optimisation) in a
    temporary file beside `scratch`, whose node names `quantize_prepared`'s `exclude` takes."""
    from kdforge.export.ort import ort  # noqa: F401 - says which extra installs ONNX Runtime where it is missing
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if any(node.domain == "kdforge" for node in onnx.load(str(fp32_path)).graph.node):
        raise UserError(f"{fp32_path} has adder layers, which ONNX Runtime's quantizer cannot quantize; "
                        f"kdforge.export.adder_int8 quantizes AdderNet students.")
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".quantize-") as folder:
        prepared, source = Path(folder) / "prepared.onnx", str(Path(fp32_path).resolve())
        try:
            with _working_directory(folder):  # where it gives up it saves its partial graph to the working directory
                quant_pre_process(source, str(prepared), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - its symbolic shape inference gives up on some graphs (a Resize by scales
            # of a dynamic batch: "Incomplete symbolic shape inference"); ONNX's own shape inference is enough for QDQ
            quant_pre_process(source, str(prepared), skip_symbolic_shape=True)
        yield prepared


def quantize_prepared(prepared: Path, int8_path: Path, images: np.ndarray, scheme: IntegerScheme, calibration: str,
                      exclude: tuple[str, ...] = (), overrides: dict | None = None) -> Path:
    """quantize_int8 of a prepared file; the nodes named in `exclude` stay float, and the tensors in
    `overrides` ({tensor: [{"rmin", "rmax"}]}) take those ranges whatever `calibration` finds."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(prepared)).graph.input[0].name
    images = np.ascontiguousarray(images, dtype=np.float32)
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.MinMax}[calibration]  # entropy's ranges come as overrides (_entropy_ranges)
    with atomic_path(Path(int8_path)) as tmp:
        options = {"ActivationSymmetric": scheme.activation_symmetric, "WeightSymmetric": True}
        with _quiet():
            ranges = _entropy_ranges(prepared, images, input_name, tmp.parent) if calibration == "entropy" else {}
            ranges.update(overrides or {})
            if ranges:
                options["TensorQuantOverrides"] = ranges
            quantize_static(str(prepared), str(tmp), _Images(images, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=scheme.reduce_range, activation_type=types[scheme.activations],
                            weight_type=types[scheme.weights], calibrate_method=method, nodes_to_exclude=list(exclude),
                            extra_options=options)
        learned = f", {len(overrides)} learned input ranges" if overrides else ""
        mark(tmp, scheme.target, scheme.name, f"{calibration}, {len(images)} images{learned}", exclude)
    return Path(int8_path)


def _entropy_ranges(prepared: Path, images: np.ndarray, input_name: str, scratch: Path) -> dict:
    """Each activation's range by ONNX Runtime's entropy (KL-divergence) calibrator over 2,048 histogram
    bins into 128 quantized ones, the setting of TensorRT's "8-bit inference with TensorRT" (GTC 2017),
    as quantize_static's per-tensor overrides. quantize_static builds that calibrator with its own
    defaults, 128 bins into 128, which leaves one candidate threshold: the whole range, MinMax's."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        calibrator = create_calibrator(str(prepared), [], str(Path(folder) / "augmented.onnx"), CalibrationMethod.Entropy,
                                       extra_options={"num_bins": 2048, "num_quantized_bins": 128})
        calibrator.collect_data(_Images(images, input_name))
        ranges = calibrator.compute_data()
    return {name: [{"rmin": np.asarray(data.range_value[0], np.float32), "rmax": np.asarray(data.range_value[1], np.float32)}]
            for name, data in ranges.data.items()}


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's histogram calibrators print their progress to stdout; the stage's log line says what ran."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
