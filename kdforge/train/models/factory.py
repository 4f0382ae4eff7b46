"""Models kdforge did not define, named by import path:

- `package.module:function`, called with the config's `model_args` (torchvision's
  `torchvision.models:resnet50`, the user's own `my_models:build`);
- `timm:NAME`, built by `timm.create_model(NAME, **model_args)`;
- `hf:CLASS`, a Hugging Face transformers model class built from its config class with
  `model_args` (`hf:ViTForImageClassification` with `{image_size: 32, patch_size: 4, num_labels: 10}`),
  without weights (a `weights:` file of its state dict gives them).

Importing and calling the named code is what the user asked for when they wrote the name in
their own config or on their command line; a name read from a file (a deploy.pt header) is never
imported (kdforge.export.strip).
"""

import importlib
import inspect
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


def _from_config(model_class):
    """A Hugging Face model class as a factory: its own config class takes the keyword arguments,
    and one it does not know is refused (a config class keeps any keyword as an attribute)."""
    config_class = model_class.config_class
    known = {*config_class().to_dict(), *inspect.signature(config_class.__init__).parameters,
             *(name for name in dir(config_class) if isinstance(getattr(config_class, name), property))}  # num_labels

    def build(**kwargs):
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(f"{config_class.__name__} has no setting {printable(unknown[0])}; its settings include "
                            f"{', '.join(sorted(k for k in known if not k.startswith('_') and k not in ('self', 'kwargs'))[:30])}.")
        return model_class(config_class(**kwargs))
    return build


def _function(name: str):
    module_name, _, function_name = check_factory(name).partition(":")
    try:
        module = importlib.import_module("transformers" if module_name == "hf" else module_name)
        if module_name == "timm":
            return lambda **kwargs: module.create_model(function_name, **kwargs)
        if module_name == "hf":
            return _from_config(getattr(module, function_name))
        return getattr(module, function_name)
    except Exception as e:  # noqa: BLE001 - the user's module, which may fail to import in any way
        raise UserError(f"{printable(name)}: cannot import it ({reason(e)}); give package.module:function.") from None


def build_factory(name: str, **kwargs) -> nn.Module:
    """The module the factory `name` returns when called with `kwargs`."""
    build = _function(name)
    try:
        model = build(**kwargs)
    except UserError:
        raise
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
