"""Method registry: `@register_method("name")` on a `Distiller` subclass."""

from kdforge.errors import UserError

_METHODS: dict = {}


def register_method(name: str):
    def wrap(cls):
        cls.method_name = name
        _METHODS[name] = cls
        return cls
    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str):
    if name not in _METHODS:
        raise UserError(f"unknown method '{name}'; known methods: {', '.join(list_methods())}.")
    return _METHODS[name]
