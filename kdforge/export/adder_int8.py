"""INT8 AdderNet students: every AdderConv2d becomes a QuantizedAdderConv2d with one scale and
zero point shared by its input and weights, calibrated on training images.

What it follows, from Nie et al., "Redistribution of Weights and Activations for AdderNet
Quantization" (NeurIPS 2022): an adder layer needs X and W on one scale, and AdderNet weights
often reach far beyond the activations' range, so a shared scale fitted to both would waste most
of the 8 bits on the weights. Their "lossless range clamp" for weights: for every x in [lo, hi],
|x - w| = |x - clamp(w, lo, hi)| + |w - clamp(w, lo, hi)|, so weights are clamped into the
activations' range and the removed part is a constant per filter, added back after the integer
sum (`correction`). The shared range is therefore the activations': MinMax over the calibration
images, widened to hold 0 (the padding), asymmetric uint8 (scale (hi - lo) / 255, zero point
round(-lo / scale)); post-ReLU inputs then use all 256 levels.
Where this departs from the paper: one scale per layer (the paper also splits a layer's filters
into groups with their own scales, and clamps activation outliers by a percentile); no
quantization-aware fine-tuning. The first convolution and the classifier stay float, as the
AdderNet papers keep them; batch norm stays a float affine after each adder layer.
"""

import copy

import torch
from torch import nn

from kdforge.nn.adder import AdderConv2d
from kdforge.nn.adder_int8 import QuantizedAdderConv2d


def input_ranges(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of each adder layer's input over `images`, by layer name."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(name):
        def hook(_module, args):
            lo, hi = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, AdderConv2d)]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return ranges


def quantized_layer(layer: AdderConv2d, lo: float, hi: float) -> QuantizedAdderConv2d:
    """The INT8 twin of `layer` whose input was seen in [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zero_point = int(min(255, max(0, round(-lo / scale))))
    w = layer.weight.detach().to(torch.float32)
    clamped = w.clamp((0 - zero_point) * scale, (255 - zero_point) * scale)
    correction = (w - clamped).abs().sum(dim=(1, 2, 3))
    qweight = torch.clamp(torch.round(clamped / scale) + zero_point, 0, 255)
    return QuantizedAdderConv2d(qweight, correction, scale, zero_point, layer.stride, layer.padding)


def quantize_adder_layers(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """A copy of `model` (eval mode) whose adder layers are INT8, calibrated on `images`."""
    model = copy.deepcopy(model).eval()
    ranges = input_ranges(model, images)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, AdderConv2d)]:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantized_layer(layer, *ranges[name]))
    return model


def has_adder_layers(model: nn.Module) -> bool:
    return any(isinstance(m, AdderConv2d) for m in model.modules())
