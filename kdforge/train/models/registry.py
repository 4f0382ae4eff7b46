"""Model registry: `@register_model` on a builder function, `create_model(name, ...)` to build.

Every builder takes `num_classes` and `in_channels` (the data decides both) and returns a
`StagedNet`. Extra keyword arguments come from the YAML `model_args` of a teacher or student.
"""

from typing import Callable

from kdforge.errors import UserError

_MODELS: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_builder(name: str) -> Callable:
    if name not in _MODELS:
        raise UserError(f"unknown model '{name}'; known models: {', '.join(list_models())}.")
    return _MODELS[name]


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs):
    try:
        return model_builder(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as e:
        raise UserError(f"model '{name}' does not take these model_args {sorted(kwargs)}: {e}.") from None
