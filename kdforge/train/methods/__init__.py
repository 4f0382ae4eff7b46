"""Registered distillation methods; importing this package registers them all."""

from kdforge.train.methods import ce, kd  # noqa: F401  (registration)
from kdforge.train.methods.base import Distiller
from kdforge.train.methods.registry import list_methods, method_class, register_method

__all__ = ["Distiller", "list_methods", "method_class", "register_method"]
