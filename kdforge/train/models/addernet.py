"""AdderNet twins of registered CNNs (Chen et al., CVPR 2020): every convolution, 1x1
downsampling shortcuts included, becomes an adder layer followed by its batch norm; the first
convolution and the classifier stay multiplicative. `eta` is the adaptive learning-rate factor."""

from kdforge.nn.adder import to_addernet
from kdforge.train.models.registry import model_builder, register_model

_TWINS = ("resnet8", "resnet20", "resnet32", "vgg_small", "imagenet_resnet18", "imagenet_resnet50")


def _register(cnn: str):
    def builder(num_classes: int, in_channels: int = 3, eta: float = 0.2):
        return to_addernet(model_builder(cnn)(num_classes=num_classes, in_channels=in_channels), keep=("stem.0",), eta=eta)
    builder.__name__ = f"{cnn}_adder"
    builder.__doc__ = f"AdderNet {cnn}: adder layers everywhere but the first convolution and the classifier."
    register_model(builder)


for _cnn in _TWINS:
    _register(_cnn)
