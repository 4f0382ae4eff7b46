"""Fake quantization of a deployed student in the integer arithmetic its INT8 export will run:
the layers quantization-aware training (kdforge.train.qat) fine-tunes through.

`with_fake_quant(model, scheme)` wraps, in place, each layer the export turns integer:
- CNN and binary students (ONNX Runtime's quantizer, kdforge.export.quantize): every nn.Conv2d
  and nn.Linear reads its input quantized per tensor and its weights quantized per output
  channel, with the scale and zero-point formulas of ONNX Runtime's own quant_utils
  (get_qmin_qmax_for_qType, compute_scale_zp) in `scheme`'s types, reduced range and symmetry.
  Per-channel scales do not change when ONNX Runtime folds a batch norm into the convolution (a
  positive factor per output channel), so the unfolded weights are quantized on the folded
  file's grid. This is the placement of NVIDIA's pytorch-quantization toolkit (inputs and
  weights of each convolution and linear layer); ONNX Runtime's Q/DQ files also requantize the
  layers' outputs, residual sums and the logits, which are not emulated: on a ResNet-8 with
  calibrated ranges the emulation's logits are 0.0076 from the U8S8 file's exact arithmetic
  where the float model's are 0.0088 (logits up to 0.6).
- AdderNet students (kdforge.export.adder_int8): each AdderConv2d's input and weights share one
  asymmetric uint8 scale, the input's range widened to 0; weights outside that range stay as they
  are, since |x - w| = |x - b| + |w - b| for the range's bound b is what the export's clamp and
  per-filter correction compute: the layer's sums are the integer node's. Not emulated: the
  fused node's requantization of its batch-norm and ReLU output, which the next adder layer's
  input quantization repeats on its own grid.
Gradients pass straight through the rounding (PyTorch's fake_quantize_per_* operators, which
also zero them outside the clipping range).

The input ranges are fixed between calls of `calibrate_fake_quant`: MinMax over the images it is
given, as the export calibrates (export.calibration's minmax, the default).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.export.int8_cpu import IntegerScheme
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.adder_op import adder_conv2d
from kdforge.train.models.families import ADDER, family_of_model


def _onnx_type(kind: str):
    from onnx import TensorProto

    return {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}[kind]


def _integer_range(kind: str, reduce_range: bool, symmetric: bool) -> tuple[int, int]:
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(_onnx_type(kind), reduce_range=reduce_range, symmetric=symmetric)
    return int(qmin), int(qmax)


def scales_and_zero_points(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
                           symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX Runtime's compute_scale_zp, elementwise over ranges [lo, hi], in torch: the range
    widened to hold 0 (and made symmetric), scale = range / (qmax - qmin)."""
    lo, hi = lo.detach().double().clamp(max=0), hi.detach().double().clamp(min=0)
    if symmetric:
        hi = torch.maximum(lo.abs(), hi)
        lo = -hi
    scale = (hi - lo) / (qmax - qmin)
    tiny = scale < np.finfo(np.float32).tiny
    safe = torch.where(tiny, torch.ones_like(scale), scale)
    if symmetric:
        zero_point = torch.full_like(scale, round((qmax + qmin) / 2.0))
    else:
        zero_point = torch.round(qmin - lo / safe).clamp(qmin, qmax)
    zero_point = torch.where(tiny, torch.zeros_like(zero_point), zero_point)
    return safe.float(), zero_point.int()


class _InputRange(nn.Module):
    """The (min, max) of a layer's input, as the last calibration saw it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.recording = False

    def see(self, x: torch.Tensor) -> None:
        self.lo.copy_(torch.minimum(self.lo, x.detach().min()))
        self.hi.copy_(torch.maximum(self.hi, x.detach().max()))


class FakeQuantLinearLayer(nn.Module):
    """An nn.Conv2d or nn.Linear computed on ONNX Runtime's Q/DQ grid for `scheme`."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, scheme: IntegerScheme):
        super().__init__()
        self.layer, self.range = layer, _InputRange()
        self.activation = (_integer_range(scheme.activations, False, scheme.activation_symmetric),
                           scheme.activation_symmetric)
        self.weights = _integer_range(scheme.weights, scheme.reduce_range, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.range.recording:  # calibration sees the float model's tensors, as the export's calibrator does
            self.range.see(x)
            return self.layer(x)
        (qmin, qmax), symmetric = self.activation
        scale, zero_point = scales_and_zero_points(self.range.lo, self.range.hi, qmin, qmax, symmetric)
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
        w = self.layer.weight
        flat = w.detach().flatten(1)
        w_scale, w_zero = scales_and_zero_points(flat.min(1).values, flat.max(1).values, *self.weights, True)
        w = torch.fake_quantize_per_channel_affine(w, w_scale, w_zero, 0, *self.weights)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


class FakeQuantAdderLayer(nn.Module):
    """An AdderConv2d computed as kdforge::QLinearAdderConv2d sums it: input and weights on the
    input range's uint8 grid."""

    def __init__(self, layer: AdderConv2d):
        super().__init__()
        self.layer, self.range = layer, _InputRange()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.range.recording:
            self.range.see(x)
            return self.layer(x)
        scale, zero_point = scales_and_zero_points(self.range.lo, self.range.hi, 0, 255, False)
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)
        w = self.layer.weight
        lo, hi = (0 - zero_point) * scale, (255 - zero_point) * scale
        inside = (w >= lo) & (w <= hi)
        w = torch.where(inside, torch.fake_quantize_per_tensor_affine(w, scale, zero_point, 0, 255), w)
        s, p = self.layer.stride, self.layer.padding
        return adder_conv2d(x, w, [s, s], [p, p], self.layer.eta)


def _wrapped(module: nn.Module, scheme: IntegerScheme, adder: bool) -> nn.Module | None:
    if adder:
        return FakeQuantAdderLayer(module) if isinstance(module, AdderConv2d) else None
    return FakeQuantLinearLayer(module, scheme) if type(module) in (nn.Conv2d, nn.Linear) else None


def with_fake_quant(model: nn.Module, scheme: IntegerScheme) -> nn.Module:
    """`model` with its integer layers fake-quantized (in place): an AdderNet's adder layers (the
    stem and classifier stay float, as its export keeps them), else every Conv2d and Linear."""
    adder = family_of_model(model) is ADDER
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            wrapper = _wrapped(child, scheme, adder)
            if wrapper is not None:
                setattr(parent, name, wrapper)
    return model


def without_fake_quant(model: nn.Module) -> nn.Module:
    """`model` with its fake-quantized layers back to the layers they wrap (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (FakeQuantLinearLayer, FakeQuantAdderLayer)):
                setattr(parent, name, child.layer)
    return model


@torch.no_grad()
def calibrate_fake_quant(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> None:
    """Sets every fake-quantized layer's input range to MinMax over `images` (the model in eval
    mode while it runs, its mode restored)."""
    ranges = [m for m in model.modules() if isinstance(m, _InputRange)]
    for r in ranges:
        r.lo.fill_(float("inf"))
        r.hi.fill_(float("-inf"))
        r.recording = True
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for r in ranges:
            r.recording = False
        model.train(was_training)
