"""TensorRT's own `tensorrt.plugin` package (pure Python, from a tensorrt-cu12-bindings wheel)
running on a stand-in for TensorRT's compiled core, which needs CUDA libraries this machine lacks.

The stand-in gives what the plugin package touches: enumerations, plugin fields, a plugin
registry, the base classes its plugins derive from, and a shape-expression builder whose
expressions are integers (constant) or unknown (dynamic), as TensorRT's IExprBuilder at build
time. Everything else, the decorators, their validators, the plugin creator and the AOT plugin
class that TensorRT calls, is TensorRT's code from the wheel.
"""

import importlib
import sys
import types
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

WHEELS = Path(sys.prefix) / "wheels"


class _Member:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _Enum(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        member = _Member(f"{cls.__name__}.{name}")
        setattr(cls, name, member)
        return member


class _Base:
    def __init__(self, *args, **kwargs):
        pass


class IDimensionExpr:
    """A dimension: an int where known at build time, None where dynamic."""

    def __init__(self, value):
        self.value = value

    def is_constant(self):
        return self.value is not None

    def get_constant_value(self):
        return self.value


_OPERATIONS = {"SUM": lambda a, b: a + b, "SUB": lambda a, b: a - b, "PROD": lambda a, b: a * b,
               "FLOOR_DIV": lambda a, b: a // b, "CEIL_DIV": lambda a, b: -(-a // b), "MAX": max, "MIN": min,
               "EQUAL": lambda a, b: int(a == b), "LESS": lambda a, b: int(a < b)}


class IExprBuilder:
    def constant(self, value):
        return IDimensionExpr(int(value))

    def operation(self, op, a, b):
        if a.value is None or b.value is None:
            return IDimensionExpr(None)
        return IDimensionExpr(_OPERATIONS[op.name.split(".")[1]](a.value, b.value))


class DimsExprs(list):
    def __init__(self, n_or_items=0):
        super().__init__([None] * n_or_items if isinstance(n_or_items, int) else n_or_items)


class Dims(list):
    MAX_DIMS = 8  # nvinfer1::Dims::MAX_DIMS

    def __init__(self, n_or_items=0):
        super().__init__([0] * n_or_items if isinstance(n_or_items, int) else n_or_items)


class PluginField:
    def __init__(self, name, data=None, type=None):
        self.name, self.type = name, type
        self.data = np.frombuffer(data, np.int8) if isinstance(data, bytes) else data


class PluginFieldCollection(list):
    pass


class _Registry:
    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace):
        key = (creator.name, creator.plugin_version, namespace)
        if key in self.creators:
            raise RuntimeError(f"a creator for {key} is already registered")
        self.creators[key] = creator
        return True

    def get_creator(self, name, version, namespace):
        return self.creators.get((name, version, namespace))


class Logger:
    WARNING, ERROR, INFO, VERBOSE = "WARNING", "ERROR", "INFO", "VERBOSE"

    def __init__(self, *args):
        pass

    def log(self, severity, message):
        pass


def core(version: str) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    registry = _Registry()
    module.get_plugin_registry = lambda: registry
    for name in ("PluginFieldType", "DataType", "TensorFormat", "DimensionOperation", "TensorRTPhase",
                 "QuickPluginCreationRequest", "PluginArgType", "PluginArgDataType"):
        setattr(module, name, _Enum(name, (), {}))
    for name, value in dict(IDimensionExpr=IDimensionExpr, IExprBuilder=IExprBuilder, DimsExprs=DimsExprs, Dims=Dims,
                            PluginField=PluginField, PluginFieldCollection=PluginFieldCollection, Logger=Logger).items():
        setattr(module, name, value)

    def other(name):  # base classes and descriptors the plugin package only names or derives from
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Base,), {})
        setattr(module, name, cls)
        return cls

    module.__getattr__ = other
    return module


def bindings_wheel(major: int) -> Path | None:
    found = sorted(WHEELS.glob(f"tensorrt_cu12_bindings-{major}.*.whl"))
    return found[-1] if found else None


@contextmanager
def tensorrt_plugin_package(wheel: Path, folder: Path):
    """`tensorrt` (the stand-in core) and `tensorrt.plugin` (the wheel's code) importable inside
    the block; sys.modules as it was afterwards."""
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith("tensorrt_bindings/plugin/") and member.endswith(".py"):
                target = folder / "tensorrt" / "plugin" / Path(member).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    saved = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    for name in list(saved):
        del sys.modules[name]
    module = core(version)
    module.__path__ = [str(folder / "tensorrt")]
    sys.modules["tensorrt"] = module
    try:
        with warnings.catch_warnings():  # the wheel's docstrings hold invalid escape sequences
            warnings.simplefilter("ignore", DeprecationWarning)
            module.plugin = importlib.import_module("tensorrt.plugin")
        yield module
    finally:
        for name in [k for k in sys.modules if k == "tensorrt" or k.startswith("tensorrt.")]:
            del sys.modules[name]
        sys.modules.update(saved)
