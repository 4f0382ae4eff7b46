"""MobileNetV2 for 32x32 inputs: stride-1 stem and second group, as in the common CIFAR port."""

from torch import nn

from kdforge.train.models.base import StagedNet, kaiming_init
from kdforge.train.models.registry import register_model

# (expansion, out channels, blocks, stride); stages end where the resolution halves next
_CIFAR_CFG = [
    [(1, 16, 1, 1), (6, 24, 2, 1)],
    [(6, 32, 3, 2)],
    [(6, 64, 4, 2), (6, 96, 3, 1)],
    [(6, 160, 3, 2), (6, 320, 1, 1)],
]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


@register_model
def mobilenetv2(num_classes: int, in_channels: int = 3, width_mult: float = 1.0):
    """MobileNetV2 (Sandler et al.) adapted to 32x32 inputs."""
    def ch(c: int) -> int:
        return max(8, int(c * width_mult))

    stem = nn.Sequential(nn.Conv2d(in_channels, ch(32), 3, 1, 1, bias=False), nn.BatchNorm2d(ch(32)), nn.ReLU6(inplace=True))
    stages, cin = [], ch(32)
    for groups in _CIFAR_CFG:
        blocks = []
        for expansion, cout, n, stride in groups:
            for i in range(n):
                blocks.append(InvertedResidual(cin, ch(cout), expansion, stride if i == 0 else 1))
                cin = ch(cout)
        stages.append(nn.Sequential(*blocks))
    last = max(1280, ch(1280))
    stages[-1].append(nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
    return kaiming_init(StagedNet(stem, stages, last, num_classes))
