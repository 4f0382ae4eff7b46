"""Architecture transforms that a deployed model records, so that deploy.pt can be rebuilt
from the registered model's name: `plain` removes every shortcut of a ResNet (JointRD's
student), leaving convolution, batch norm and ReLU only."""

from torch import nn

from kdforge.errors import UserError


def remove_shortcuts(model: nn.Module) -> nn.Module:
    blocks = [m for m in model.modules() if hasattr(m, "shortcut")]
    if not blocks:
        raise UserError(f"{type(model).__name__} has no residual blocks with shortcuts; a plain student needs a ResNet.")
    for block in blocks:
        block.shortcut = None
    return model


TRANSFORMS = {"plain": remove_shortcuts}


def apply_transforms(model: nn.Module, names) -> nn.Module:
    for name in names:
        model = TRANSFORMS[name](model)
    return model
