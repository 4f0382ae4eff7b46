"""Auxiliary classifiers on every stage of a StagedNet, as in TOFD's public code.

Stage i's head is a stack of separable-convolution units that carries its features down to the
last stage's width and resolution (depthwise 3x3 stride s -> pointwise 1x1 -> BN -> ReLU ->
depthwise 3x3 -> pointwise 1x1 widening -> BN -> ReLU, one unit per later stage, s that
stage's downsampling), then global average pooling and a linear classifier. The last stage's
"head" is the network's own pool and classifier, the one that ships; the others are stripped.
"""

import torch
from torch import nn


class SepConv(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__(
            nn.Conv2d(channels_in, channels_in, 3, stride, 1, groups=channels_in, bias=False),
            nn.Conv2d(channels_in, channels_in, 1, bias=False),
            nn.BatchNorm2d(channels_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(channels_in, channels_in, 3, 1, 1, groups=channels_in, bias=False),
            nn.Conv2d(channels_in, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=False),
        )


class AuxiliaryHeads(nn.Module):
    """Heads for stages 0 .. S-2 of `model`, sized from the stage outputs on `example`."""

    def __init__(self, model: nn.Module, example: torch.Tensor, num_classes: int):
        super().__init__()
        with torch.no_grad():
            shapes = [f.shape for f in model.eval().forward_stages(example)]
        model.train()
        heads = []
        for i in range(len(shapes) - 1):
            units = []
            for a, b in zip(shapes[i:-1], shapes[i + 1:]):
                units.append(SepConv(a[1], b[1], stride=max(1, a[2] // b[2])))
            heads.append(nn.Sequential(*units, nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.convs = nn.ModuleList(heads)
        self.fcs = nn.ModuleList(nn.Linear(shapes[-1][1], num_classes) for _ in heads)
        self.feature_dim = shapes[-1][1]

    def forward(self, model: nn.Module, stage_features: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, pooled feature) of every head, the model's own classifier last."""
        outputs = []
        for conv, fc, feat in zip(self.convs, self.fcs, stage_features):
            pooled = conv(feat)
            outputs.append((fc(pooled), pooled))
        embedding = model.embed(stage_features[-1])
        outputs.append((model.fc(embedding), embedding))
        return outputs
