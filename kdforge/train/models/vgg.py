"""VGG-small, the CIFAR network of the binary- and adder-network papers:
(2x128 C3) - MP2 - (2x256 C3) - MP2 - (2x512 C3) - MP2 - FC.

Departure: the classifier reads globally average-pooled 512-d features (the original flattens
512x4x4 at 32x32 input), so that the one network serves any input size.
"""

from torch import nn

from kdforge.train.models.base import StagedNet, kaiming_init
from kdforge.train.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model
def vgg_small(num_classes: int, in_channels: int = 3):
    """VGG-small: 128-128-256-256-512-512 3x3 convolutions, three max-pools."""
    stem = nn.Sequential(*_conv_bn_relu(in_channels, 128))
    stages = [
        nn.Sequential(*_conv_bn_relu(128, 128), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(128, 256), *_conv_bn_relu(256, 256), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(256, 512), *_conv_bn_relu(512, 512), nn.MaxPool2d(2)),
    ]
    return kaiming_init(StagedNet(stem, stages, 512, num_classes))
