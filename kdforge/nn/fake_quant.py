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

A CNN layer's input range is either calibrated, fixed between calls of `calibrate_fake_quant`
(MinMax over the images it is given, as the export calibrates with export.calibration's minmax,
the default), or learned (`learn_ranges`): its scale and zero point start at the calibrated range
and train with the weights, LSQ+ (Bhalgat et al., CVPR-W 2020) through PyTorch's learnable
fake-quantization operator with LSQ's gradient scale; a non-negative input (after a ReLU) learns
its scale alone, as in LSQ, its grid starting at 0. Ranges start at the clip of the MinMax range
that moves the layer's output least (`_start_learned_range`), since a gradient step moves a range
by a fraction of itself, not by the orders of magnitude an outlier channel can put between them.
Layers that read the same tensor share one range, as the file has one quantizer per tensor; a
tensor other operations read too (a residual sum) keeps its calibrated range, which the caller
says by the paths it names (kdforge.export.int8_ranges). The learned clip is part of the trained
model: the deployed FP32 model carries it (kdforge.nn.input_clip). An AdderNet's ranges are
always calibrated: its input scale is also its weights', which the integer node's export
calibrates itself.
"""

import math
from typing import Collection

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


SMALLEST_SCALE = 1e-8  # a learned scale that training would take to 0 or below stops here, as torch.ao's eps
CLIP_FRACTIONS = [2.0 ** (-k / 2) for k in range(25)]  # where learned ranges may start: MinMax's down to 1/4096 of it


class InputRange(nn.Module):
    """The (min, max) of a layer's input as the last calibration saw it, and where `learnable` the
    trained scale and zero-point that calibration starts."""

    def __init__(self, learnable: bool = False):
        super().__init__()
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.recording, self.learnable, self.seen = False, learnable, None
        if learnable:
            self.scale = nn.Parameter(torch.tensor(1.0))
            self.zero_point = nn.Parameter(torch.tensor(0.0))

    def see(self, x: torch.Tensor) -> None:
        self.lo.copy_(torch.minimum(self.lo, x.detach().min()))
        self.hi.copy_(torch.maximum(self.hi, x.detach().max()))

    def start(self, qmin: int, qmax: int, symmetric: bool) -> None:
        """Starts the learned scale and zero-point at the calibrated range's."""
        scale, zero_point = scales_and_zero_points(self.lo, self.hi, qmin, qmax, symmetric)
        with torch.no_grad():
            self.scale.fill_(float(scale))
            self.zero_point.fill_(float(zero_point))

    def quantize(self, x: torch.Tensor, qmin: int, qmax: int, symmetric: bool) -> torch.Tensor:
        if not self.learnable:
            scale, zero_point = scales_and_zero_points(self.lo, self.hi, qmin, qmax, symmetric)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
        # a symmetric grid's zero point is fixed, and so is a non-negative input's (LSQ's, at the grid's
        # bottom): ONNX Runtime removes a Relu before its quantizer, which then clips at 0 in its place
        fixed = symmetric or bool(self.lo >= 0)
        zero_point = self.zero_point.detach() if fixed else self.zero_point
        return torch._fake_quantize_learnable_per_tensor_affine(  # the gradient scale is LSQ's, as torch.ao's
            x, self.scale.clamp(min=SMALLEST_SCALE).reshape(1), zero_point.reshape(1), qmin, qmax, 1.0 / math.sqrt(x.numel() * qmax))

    def bounds(self, qmin: int, qmax: int) -> tuple[float, float]:
        """The learned grid as the (rmin, rmax) from which ONNX Runtime's compute_scale_zp gives it back."""
        scale, zero_point = max(float(self.scale.detach()), SMALLEST_SCALE), round(min(max(float(self.zero_point.detach()), qmin), qmax))
        return (qmin - zero_point) * scale, (qmax - zero_point) * scale


class FakeQuantLinearLayer(nn.Module):
    """An nn.Conv2d or nn.Linear computed on ONNX Runtime's Q/DQ grid for `scheme`."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, scheme: IntegerScheme, learn_range: bool = False):
        super().__init__()
        self.layer, self.range = layer, InputRange(learn_range)
        self.activation = (_integer_range(scheme.activations, False, scheme.activation_symmetric),
                           scheme.activation_symmetric)
        self.weights = _integer_range(scheme.weights, scheme.reduce_range, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.range.recording:  # calibration sees the float model's tensors, as the export's calibrator does
            self.range.see(x)
            return self.layer(x)
        (qmin, qmax), symmetric = self.activation
        x = self.range.quantize(x, qmin, qmax, symmetric)
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
        self.layer, self.range = layer, InputRange()

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


def _wrapped(module: nn.Module, scheme: IntegerScheme, adder: bool, learn_ranges: bool) -> nn.Module | None:
    if adder:
        return FakeQuantAdderLayer(module) if isinstance(module, AdderConv2d) else None
    return FakeQuantLinearLayer(module, scheme, learn_ranges) if type(module) in (nn.Conv2d, nn.Linear) else None


def with_fake_quant(model: nn.Module, scheme: IntegerScheme, learned_ranges: Collection[str] = ()) -> nn.Module:
    """`model` with its integer layers fake-quantized (in place): an AdderNet's adder layers (the
    stem and classifier stay float, as its export keeps them), else every Conv2d and Linear, whose
    input ranges train where their path is in `learned_ranges` (after a first
    `calibrate_fake_quant` starts them)."""
    adder = family_of_model(model) is ADDER
    if adder and learned_ranges:
        raise ValueError("an AdderNet's input ranges are calibrated, not learned")
    for parent_path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            path = f"{parent_path}.{name}" if parent_path else name
            wrapper = _wrapped(child, scheme, adder, path in learned_ranges)
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


def learned_input_ranges(model: nn.Module) -> dict[str, list[float]]:
    """{layer path: [rmin, rmax]} of each learned input range, the path the layer has once
    `without_fake_quant` puts it back."""
    return {name: list(m.range.bounds(*m.activation[0])) for name, m in model.named_modules()
            if isinstance(m, FakeQuantLinearLayer) and m.range.learnable}


@torch.no_grad()
def calibrate_fake_quant(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> None:
    """Sets every fake-quantized layer's input range to MinMax over `images` (the model in eval
    mode while it runs, its mode restored) and starts the learned ones there; layers that read the
    same tensor come to share one range."""
    layers = [m for m in model.modules() if isinstance(m, (FakeQuantLinearLayer, FakeQuantAdderLayer))]
    for r in {id(m.range): m.range for m in layers}.values():
        r.lo.fill_(float("inf"))
        r.hi.fill_(float("-inf"))
        r.recording, r.seen = True, None
    handles = [m.register_forward_pre_hook(_remember_first_input) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        for m in layers:
            m.range.recording = False
        model.train(was_training)
    _share_ranges(layers)


def _remember_first_input(layer: nn.Module, inputs: tuple) -> None:
    if layer.range.seen is None:
        layer.range.seen = inputs[0]  # held until calibration ends, so no other tensor takes its memory


def _share_ranges(layers: list[nn.Module]) -> None:
    """CNN layers whose first calibration input was one tensor take the first one's range (the union
    of theirs), then the learned ranges start. An adder layer keeps its own, as its export
    calibrates each layer alone."""
    readers: dict[tuple, list[nn.Module]] = {}
    for m in layers:
        x, key = m.range.seen, id(m)
        if isinstance(m, FakeQuantLinearLayer) and x is not None:
            key = (x.data_ptr(), tuple(x.shape), x.stride())
        group = readers.setdefault(key, [m])
        if group[0] is not m:
            group[0].range.see(torch.stack([m.range.lo, m.range.hi]))
            m.range = group[0].range
            group.append(m)
    for group in readers.values():
        if group[0].range.learnable and group[0].range.seen is not None:
            _start_learned_range(group)
    for m in layers:
        m.range.seen = None


def _start_learned_range(readers: list["FakeQuantLinearLayer"]) -> None:
    """Starts the range `readers` share at the clip of their MinMax range whose quantization moves
    their outputs least on the first calibration batch (summed squared error, weights quantized too).
    The output's error, not the tensor's: where one channel's activations are orders of magnitude
    above the rest, keeping them costs every other channel its resolution, which the tensor's own
    error does not count. Training then moves the range from there."""
    shared, x = readers[0].range, readers[0].range.seen
    (qmin, qmax), symmetric = readers[0].activation
    lo, hi = shared.lo.clone(), shared.hi.clone()
    references = [m.layer(x) for m in readers]

    def output_error(fraction: float) -> float:
        shared.lo.copy_(lo * fraction)
        shared.hi.copy_(hi * fraction)
        shared.start(qmin, qmax, symmetric)
        return sum(float(F.mse_loss(m(x), reference, reduction="sum")) for m, reference in zip(readers, references))

    best = min(CLIP_FRACTIONS, key=output_error)
    output_error(best)
