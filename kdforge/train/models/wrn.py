"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis): pre-activation blocks, 16k/32k/64k channels."""

from torch import nn

from kdforge.train.models.base import StagedNet, kaiming_init
from kdforge.train.models.registry import register_model


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.equal_in_out = in_planes == planes and stride == 1
        self.shortcut = nn.Identity() if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.equal_in_out else self.shortcut(pre))


def wide_resnet(depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0):
    assert (depth - 4) % 6 == 0, "WRN depth is 6n+4"
    n = (depth - 4) // 6
    widths = (16 * width, 32 * width, 64 * width)
    stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
    stages, in_planes = [], 16
    for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2))):
        blocks = [WideBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1, dropout) for j in range(n)]
        if i == 2:  # the network's final pre-activation belongs to the last stage
            blocks += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
        stages.append(nn.Sequential(*blocks))
        in_planes = planes
    return kaiming_init(StagedNet(stem, stages, widths[-1], num_classes))


def _register(depth: int, width: int):
    def builder(num_classes: int, in_channels: int = 3, dropout: float = 0.0):
        return wide_resnet(depth, width, num_classes, in_channels, dropout)
    builder.__name__ = f"wrn_{depth}_{width}"
    builder.__doc__ = f"Wide ResNet-{depth}-{width}."
    register_model(builder)


for _d, _w in ((16, 1), (16, 2), (16, 4), (28, 2), (28, 4), (28, 10), (40, 1), (40, 2), (40, 4)):
    _register(_d, _w)
