"""Models kdforge did not define, named by import path:

- `package.module:function`, called with the config's `model_args` (torchvision's
  `torchvision.models:resnet50`, the user's own `my_models:build`);
- `timm:NAME`, built by `timm.create_model(NAME, **model_args)`.

Importing and calling the named code is what the user asked for when they wrote the name in
their own config or on their command line; a name read from a file (a deploy.pt header) is never
imported (kdforge.export.strip).
"""

import importlib
import re

from torch import nn

from kdforge.errors import UserError, printable, reason

_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_][\w.-]*")


def is_factory(name: str) -> bool:
    return ":" in name


def check_factory(name: str) -> str:
    """`name` if it has a factory's form, else a UserError."""
    if not _FACTORY.fullmatch(name):
        raise UserError(f"{printable(name)} is neither a registered model nor a factory package.module:function.")
    return name


def _function(name: str):
    module_name, _, function_name = check_factory(name).partition(":")
    try:
        module = importlib.import_module(module_name)
        if module_name == "timm":
            return lambda **kwargs: module.create_model(function_name, **kwargs)
        return getattr(module, function_name)
    except Exception as e:  # noqa: BLE001 - the user's module, which may fail to import in any way
        raise UserError(f"{printable(name)}: cannot import it ({reason(e)}); give package.module:function.") from None


def build_factory(name: str, **kwargs) -> nn.Module:
    """The module the factory `name` returns when called with `kwargs`."""
    build = _function(name)
    try:
        model = build(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code
        raise UserError(f"{printable(name)}({printable(str(kwargs))[1:-1]}) failed: {reason(e)}.") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{printable(name)}() returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def file_names_factory(path, name: str, command: str) -> UserError:
    """The refusal of a file (a deploy.pt, a run directory's config) that names the factory `name`:
    importing what a file names would run code from whoever wrote it."""
    return UserError(f"{printable(str(path))} holds a model built by the factory {printable(name)}, which kdforge imports "
                     f"only where your config names it: run `kdforge run CONFIG --only {command}`.")
