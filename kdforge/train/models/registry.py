"""Model registry: `@register_model` on a builder function, `create_model(name, ...)` to build.

Every builder takes `num_classes` and `in_channels` (the data decides both) and returns a
`StagedNet`. Extra keyword arguments come from the YAML `model_args` of a teacher or student.
"""

from typing import Callable

import torch

from kdforge.errors import UserError, printable, reason

_MODELS: dict[str, Callable] = {}
_FAMILIES: dict[str, str] = {}


def register_model(fn: Callable, family: str | None = None) -> Callable:
    """Registers `fn` under its name; `family` ("adder", "binary") where it builds a multiplier-light
    twin (kdforge.train.models.families)."""
    _MODELS[fn.__name__] = fn
    if family is not None:
        _FAMILIES[fn.__name__] = family
    return fn


def model_family(name: str) -> str | None:
    """The family a registered model was registered as, or None (a CNN, or not a registered name)."""
    return _FAMILIES.get(name)


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_builder(name: str) -> Callable:
    if name not in _MODELS:
        raise UserError(f"unknown model '{name}'; known models: {', '.join(list_models())}.")
    return _MODELS[name]


MAX_PARAMETERS = 1 << 28  # 1 GiB of fp32 weights; ResNet-152, the largest registered model, has 60 M


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs):
    """The model `name` built with `kwargs` (a config's model_args). It is first built on the meta
    device, which allocates nothing, so that model_args asking for a giant network are refused."""
    build = model_builder(name)
    if not all(type(n) is int and 0 < n <= 1 << 20 for n in (num_classes, in_channels)):
        raise UserError(f"model '{name}' needs a positive number of classes and input channels, not "
                        f"{printable(str(num_classes))} and {printable(str(in_channels))}.")
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in build(num_classes=num_classes, in_channels=in_channels, **kwargs).parameters())
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise UserError(f"model '{name}' cannot be built with model_args {printable(str(kwargs))} ({reason(e)}).") from None
    if size > MAX_PARAMETERS:
        raise UserError(f"model '{name}' with model_args {printable(str(kwargs))} would have {size:,} parameters, more "
                        f"than kdforge builds ({MAX_PARAMETERS:,}); check the sizes in model_args.")
    return build(num_classes=num_classes, in_channels=in_channels, **kwargs)
