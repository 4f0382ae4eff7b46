"""`AdderConv2d`, the AdderNet layer, and `to_addernet`, which turns a CNN into its AdderNet twin."""

import torch
from torch import nn

from kdforge.nn.adder_op import adder_conv2d


class AdderConv2d(nn.Module):
    """Y = -sum |X - W| over each receptive field (Chen et al., CVPR 2020). No bias, no groups;
    weights start N(0, 1) as in the paper; eta is the adaptive learning-rate factor of the
    layer's weight gradient."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, eta: float = 0.2):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.eta = kernel_size, stride, padding, eta
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p = self.stride, self.padding
        return adder_conv2d(x, self.weight, [s, s], [p, p], self.eta)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, eta={self.eta}")


def to_addernet(model: nn.Module, keep: tuple[str, ...], eta: float = 0.2) -> nn.Module:
    """Replaces every nn.Conv2d of `model` by an AdderConv2d of the same geometry, except the
    convolutions named in `keep` (the first convolution stays multiplicative, as in the paper;
    the classifier is linear and untouched). Grouped, dilated or biased convolutions are refused."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Conv2d) and full not in keep:
                if child.groups != 1 or child.dilation != (1, 1) or child.bias is not None or child.kernel_size[0] != child.kernel_size[1]:
                    raise ValueError(f"{full}: AdderConv2d takes square, ungrouped, undilated convolutions without bias")
                setattr(module, child_name, AdderConv2d(child.in_channels, child.out_channels, child.kernel_size[0],
                                                        child.stride[0], child.padding[0], eta))
    return model
