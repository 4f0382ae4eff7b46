"""The input ranges a student learned in quantization-aware training (`qat.ranges: learned`) as
clamps on its layers' inputs, so that the FP32 model computes what its INT8 file computes apart
from rounding. Training saw every layer's input clipped to its learned range; a model without
those clips is another function, and verify would compare the INT8 file against it.

The clamps are forward pre-hooks, rebuilt from deploy.pt's `int8_input_ranges` ({layer path:
[rmin, rmax]}) when it loads: the state dict keeps the user's parameter names, and the ONNX
export traces each clamp as a Clip node before its layer, whose range ONNX Runtime's quantizer
then takes for that layer's input quantizer.
"""

import torch
from torch import nn


def clip_layer_inputs(model: nn.Module, ranges: dict[str, list[float]]) -> nn.Module:
    """`model` (in place) with each layer named in `ranges` clamping its input to its range."""
    modules = dict(model.named_modules())
    for path, (low, high) in ranges.items():
        modules[path].register_forward_pre_hook(_clamp(low, high))
    return model


def _clamp(low: float, high: float):
    def hook(_layer: nn.Module, inputs: tuple) -> tuple:
        return (torch.clamp(inputs[0], low, high), *inputs[1:])
    return hook
