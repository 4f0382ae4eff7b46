"""ResNets: the He et al. CIFAR family (16/32/64 channels, depth 6n+2), the 64-512 CIFAR
ResNet-18/34/50 (3x3 stem, no max-pool) and the ImageNet ResNet-18/50.

Downsampling shortcuts are 1x1 convolution + batch norm (He et al.'s option B), as in the
AdderNet and most distillation code; identity shortcuts elsewhere. A block whose shortcut is
None is plain (models/plain.py).
"""

from torch import nn

from kdforge.train.models.base import StagedNet, conv_bn, kaiming_init
from kdforge.train.models.registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out if self.shortcut is None else out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out if self.shortcut is None else out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return conv_bn(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), out_planes)


def _stages(block, in_planes: int, widths, depths, strides):
    stages = []
    for width, depth, stride in zip(widths, depths, strides):
        blocks = []
        for s in [stride] + [1] * (depth - 1):
            blocks.append(block(in_planes, width, s))
            in_planes = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


def _resnet(block, widths, depths, strides, stem, stem_width, num_classes):
    stages, feature_dim = _stages(block, stem_width, widths, depths, strides)
    return kaiming_init(StagedNet(stem, stages, feature_dim, num_classes))


def _cifar_stem(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


def _imagenet_stem(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


def cifar_resnet(depth: int, num_classes: int, in_channels: int = 3):
    """He et al.'s CIFAR ResNet-(6n+2): three stages of n basic blocks, 16/32/64 channels."""
    assert (depth - 2) % 6 == 0, "CIFAR ResNet depth is 6n+2"
    n = (depth - 2) // 6
    return _resnet(BasicBlock, (16, 32, 64), (n,) * 3, (1, 2, 2), _cifar_stem(in_channels, 16), 16, num_classes)


def _register_cifar_resnet(depth: int):
    def builder(num_classes: int, in_channels: int = 3):
        return cifar_resnet(depth, num_classes, in_channels)
    builder.__name__ = f"resnet{depth}"
    builder.__doc__ = f"CIFAR ResNet-{depth} (16/32/64 channels)."
    register_model(builder)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register_cifar_resnet(_depth)


_WIDE_SPECS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)), "resnet50": (Bottleneck, (3, 4, 6, 3)),
               "resnet101": (Bottleneck, (3, 4, 23, 3)), "resnet152": (Bottleneck, (3, 8, 36, 3))}
_IMAGENET_ONLY = ("resnet101", "resnet152")  # the deep teachers of the ImageNet experiments


def _register_wide(name: str):
    block, depths = _WIDE_SPECS[name]

    def cifar_builder(num_classes: int, in_channels: int = 3):
        return _resnet(block, (64, 128, 256, 512), depths, (1, 2, 2, 2), _cifar_stem(in_channels, 64), 64, num_classes)

    def imagenet_builder(num_classes: int, in_channels: int = 3):
        return _resnet(block, (64, 128, 256, 512), depths, (1, 2, 2, 2), _imagenet_stem(in_channels), 64, num_classes)

    cifar_builder.__name__ = f"cifar_{name}"
    cifar_builder.__doc__ = f"CIFAR {name}: 64-512 channels, 3x3 stem, no max-pool."
    imagenet_builder.__name__ = f"imagenet_{name}"
    imagenet_builder.__doc__ = f"ImageNet {name}: 7x7 stride-2 stem and max-pool."
    if name not in _IMAGENET_ONLY:
        register_model(cifar_builder)
    register_model(imagenet_builder)


for _name in _WIDE_SPECS:
    _register_wide(_name)
