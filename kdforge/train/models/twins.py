"""Multiplier-light twins of registered CNNs, named CNN_adder and CNN_binary. Every convolution
but the first (1x1 downsampling shortcuts included) becomes
- an adder layer followed by its batch norm (AdderNet, Chen et al., CVPR 2020; model_arg `eta`,
  the adaptive learning-rate factor), or
- a 1-bit layer, XNOR-Net style (kdforge/nn/binary.py), the third family of the PKKD comparison;
the first convolution and the classifier stay full precision in both."""

from kdforge.nn.adder import to_addernet
from kdforge.nn.binary import to_binary
from kdforge.train.models.registry import model_builder, register_model

_CNNS = ("resnet8", "resnet20", "resnet32", "vgg_small", "imagenet_resnet18", "imagenet_resnet50")
_FAMILIES = {
    "adder": (to_addernet, "AdderNet {}: adder layers everywhere but the first convolution and the classifier."),
    "binary": (to_binary, "Binary {}: 1-bit (XNOR) convolutions everywhere but the first convolution and the classifier."),
}


def _register(cnn: str, family: str):
    transform, doc = _FAMILIES[family]

    def builder(num_classes: int, in_channels: int = 3, **options):
        return transform(model_builder(cnn)(num_classes=num_classes, in_channels=in_channels), keep=("stem.0",), **options)
    builder.__name__ = f"{cnn}_{family}"
    builder.__doc__ = doc.format(cnn)
    register_model(builder, family=family)


for _cnn in _CNNS:
    for _family in _FAMILIES:
        _register(_cnn, _family)
