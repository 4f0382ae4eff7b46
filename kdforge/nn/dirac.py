"""Dirac-parametrised convolution (JointRD, after DiracNets): W_hat = diag(alpha) * delta + diag(beta) * W.

delta is the identity (Dirac) kernel: a plain network of such layers starts close to an
identity mapping and trains without shortcuts. alpha and beta are per output channel,
learnable, and start at 1 and 0.1. `fold()` turns the layer into one ordinary nn.Conv2d with
W_hat as its weight, so nothing of the parametrisation ships.
"""

import torch
import torch.nn.functional as F
from torch import nn


class DiracConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, alpha: float = 1.0, beta: float = 0.1):
        super().__init__()
        if conv.groups != 1 or conv.bias is not None:
            raise ValueError("DiracConv2d takes ungrouped convolutions without bias")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.alpha = nn.Parameter(torch.full((conv.out_channels,), alpha))
        self.beta = nn.Parameter(torch.full((conv.out_channels,), beta))
        self.register_buffer("delta", nn.init.dirac_(torch.empty_like(conv.weight)), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        return self.alpha.view(-1, 1, 1, 1) * self.delta + self.beta.view(-1, 1, 1, 1) * self.weight

    def forward(self, x):
        return F.conv2d(x, self.effective_weight(), None, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        out_channels, in_channels, kh, kw = self.weight.shape
        conv = nn.Conv2d(in_channels, out_channels, (kh, kw), self.stride, self.padding, self.dilation, bias=False)
        conv.weight.copy_(self.effective_weight())
        return conv.to(self.weight.device)
