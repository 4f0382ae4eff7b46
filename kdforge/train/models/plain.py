"""Architecture transforms that a deployed model records, so that deploy.pt can be rebuilt
from the registered model's name: `plain` removes every shortcut of a ResNet (JointRD's
student), leaving convolution, batch norm and ReLU only."""

from torch import nn

from kdforge.errors import UserError


def remove_shortcuts(model: nn.Module) -> nn.Module:
    blocks = [m for m in model.modules() if hasattr(m, "shortcut")]
    if not blocks:
        name = getattr(model, "source", "") or type(model).__name__  # a ForeignNet's factory name
        raise UserError(f"{name} has no residual blocks of kdforge's ResNets; JointRD's plain student needs one of "
                        f"them (kdforge models lists resnet*).")
    for block in blocks:
        block.shortcut = None
    return model


TRANSFORMS = {"plain": remove_shortcuts}


def apply_transforms(model: nn.Module, names) -> nn.Module:
    for name in names:
        model = TRANSFORMS[name](model)
    return model
