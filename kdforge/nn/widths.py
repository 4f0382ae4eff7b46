"""A pruned network's structure as data: the widths of its layers ({module path: {attribute:
int}}), stored in deploy.pt beside the state dict and put back on a freshly built network of the
same architecture, so a pruned student rebuilds through the safe loader without a pickled module.

Convolutions keep in_channels, out_channels and groups (a depthwise convolution's groups shrink
with its channels), linear layers in_features and out_features, normalisation layers
num_features. Widths come from a stranger's file: each is checked against the network it is put on
(the module exists and is of that kind, the values are positive, at most the unpruned layer's and
divide by groups) before any tensor of that size is made; the state dict then loads as usual,
which refuses a tensor of another shape.
"""

import torch
from torch import nn

ATTRIBUTES = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm2d: ("num_features",),
    nn.BatchNorm1d: ("num_features",),
}


def _attributes(module: nn.Module) -> tuple[str, ...]:
    return next((names for kind, names in ATTRIBUTES.items() if isinstance(module, kind)), ())


def layer_widths(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, int]]:
    """The widths of `model`'s layers that differ from `reference`'s (the same architecture, unpruned)."""
    unpruned = dict(reference.named_modules())
    changed = {}
    for path, module in model.named_modules():
        widths = {name: int(getattr(module, name)) for name in _attributes(module)}
        if widths and any(getattr(unpruned[path], name) != value for name, value in widths.items()):
            changed[path] = widths
    return changed


def resize(model: nn.Module, widths: dict) -> nn.Module:
    """`model` (in place) with the layers `widths` names at those widths, their tensors new and
    uninitialised, for a state dict to fill; ValueError names what does not fit. A width is at
    most the architecture's own (pruning only removes), so no declared size allocates more than the
    unpruned network would."""
    modules = dict(model.named_modules())
    if not isinstance(widths, dict):
        raise ValueError("widths is not a mapping of layers")
    for path, values in widths.items():
        module = modules.get(path) if isinstance(path, str) else None
        names = _attributes(module) if module is not None else ()
        if not names or not isinstance(values, dict) or set(values) != set(names):
            raise ValueError(f"widths name layer {path!r}, which this architecture has not as such a layer")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= getattr(module, k) for k, v in values.items()):
            raise ValueError(f"layer {path!r} has widths that are not positive integers up to its unpruned ones")
        groups = values.get("groups", 1)
        if "groups" in values and (values["in_channels"] % groups or values["out_channels"] % groups):
            raise ValueError(f"layer {path!r}'s channels do not divide by its groups")
        for name, value in values.items():
            setattr(module, name, value)
        _new_tensors(module)
    return model


def _new_tensors(module: nn.Module) -> None:
    """Replaces the module's own tensors by uninitialised ones of the shapes its widths give."""
    if isinstance(module, nn.Conv2d):
        shapes = {"weight": (module.out_channels, module.in_channels // module.groups, *module.kernel_size),
                  "bias": (module.out_channels,)}
    elif isinstance(module, nn.Linear):
        shapes = {"weight": (module.out_features, module.in_features), "bias": (module.out_features,)}
    else:
        shapes = {name: (module.num_features,) for name in ("weight", "bias", "running_mean", "running_var")}
    for name, shape in shapes.items():
        tensor = getattr(module, name, None)
        if tensor is None:
            continue
        fresh = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=tensor.requires_grad))
        else:
            module.register_buffer(name, fresh)
