"""`BinaryConv2d`, the 1-bit layer of the binary networks PKKD compares AdderNets with, and
`to_binary`, which turns a CNN into its binary twin.

XNOR-Net style (Rastegari et al., ECCV 2016): the layer convolves sign(X) with sign(W) and scales
each output channel by alpha_o = mean |W_o|, so a binary MAC is one XNOR and one popcount-add
(DESIGN.md's binary accounting); the scale is one multiplication per output element, counted
apart like batch norm. Gradients pass through sign by the straight-through estimator, clipped
to |x| <= 1 (BinaryConnect / XNOR-Net). sign(0) = 0 as torch.sign has it; after batch norm an
exact zero has probability zero, and a 1-bit kernel maps it to +1.

The export is standard ONNX (Sign, Conv, Mul), which the counters recognise: a convolution whose
input and weight are both sign() outputs (or, in an ONNX file, an input from Sign and a weight
of +-1 values) is binary.
"""

import torch
import torch.nn.functional as F
from torch import nn


class _SignStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward, the clipped identity backward."""
    return _SignStraightThrough.apply(x)


class BinaryConv2d(nn.Conv2d):
    """conv(sign(X), sign(W)) * mean|W_o| per output channel; geometry as nn.Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
        y = F.conv2d(binarize(x), binarize(self.weight), None, self.stride, self.padding, self.dilation, self.groups)
        y = y * alpha
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def to_binary(model: nn.Module, keep: tuple[str, ...]) -> nn.Module:
    """Replaces every nn.Conv2d of `model` by a BinaryConv2d of the same geometry, except the
    convolutions named in `keep` (the first convolution stays full precision, as in XNOR-Net and
    the PKKD comparison; the classifier is linear and untouched)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Conv2d and full not in keep:
                binary = BinaryConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                      child.dilation, child.groups, child.bias is not None)
                setattr(module, child_name, binary)
    return model
