"""The network a config's teacher or student section describes (kdforge.config.ModelSection),
in the shape distillation methods read:

- a registered model (`kdforge models`): a StagedNet, its `weights` loaded by kdforge's names;
- a factory's model: the user's module, its `weights` loaded by the user's own names (a
  classifier of another class count than the data's is replaced: fine-tuning), then seen through
  a ForeignNet whose stages and classifier the config names or one forward pass finds;
- either, with `family`, turned into its AdderNet or binary twin: every convolution but the first
  (an adder conversion keeps those the adder node does not take: grouped, dilated, biased or
  non-square ones).

`build_network` returns the network and the lines that say what was done to it, for the log."""

import torch
from torch import nn

from kdforge.errors import printable
from kdforge.nn.adder import to_addernet
from kdforge.nn.binary import to_binary
from kdforge.train.models.factory import build_factory, is_factory
from kdforge.train.models.discovery import discover
from kdforge.train.models.foreign import ForeignNet
from kdforge.train.models.registry import create_model
from kdforge.train.weights import load_named, read_state_dict


def _first_conv(net: nn.Module) -> str | None:
    return next((name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)


def _adder_compatible(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 and conv.dilation == (1, 1) and conv.bias is None and conv.kernel_size[0] == conv.kernel_size[1]


def convert_family(net: nn.Module, family: str | None) -> list[str]:
    """Turns `net` into its `family` twin in place; the log lines that say how."""
    if family is None:
        return []
    first = _first_conv(net)
    convs = [name for name, m in net.named_modules() if type(m) is nn.Conv2d and name != first]
    kept = [name for name in convs if family == "adder" and not _adder_compatible(net.get_submodule(name))]
    if family == "adder":
        to_addernet(net, keep=(first, *kept))
    else:
        to_binary(net, keep=(first,))
    lines = [f"family {family}: {len(convs) - len(kept)} convolutions converted, the first ({first}) kept"]
    if kept:
        lines.append(f"kept as convolutions (grouped, dilated, biased or non-square): {', '.join(kept[:8])}"
                     f"{' ...' if len(kept) > 8 else ''}")
    return lines


def _set_module(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, module)


def _fit_classifier(net: nn.Module, path: str, classes: int) -> bool:
    """Replaces the nn.Linear at `path` by a fresh one with `classes` outputs; False if it has them."""
    head = net.get_submodule(path)
    if head.out_features == classes:
        return False
    _set_module(net, path, nn.Linear(head.in_features, classes, bias=head.bias is not None))
    return True


def _factory_network(section, num_classes: int, example: torch.Tensor, with_weights: bool) -> tuple[nn.Module, list[str]]:
    source, lines = printable(section.model), []
    net = build_factory(section.model, **section.model_args)
    stages, classifier = section.stages, section.classifier
    if stages is None or classifier is None:
        found = discover(net, example, source, section.output)
        stages, classifier = stages or found.stages, classifier or found.classifier
        lines.append(f"stages {', '.join(stages)}; classifier {classifier}")
        lines.extend(found.notes if section.stages is None else [])
    model = ForeignNet(net, stages, classifier, source, section.output)  # checks them; what follows changes `net` in place
    if with_weights and section.weights is not None:
        state = read_state_dict(section.weights, "weights file")
        saved = state.get(f"{classifier}.weight")
        if saved is not None and saved.ndim == 2:  # the checkpoint's own class count, for the load
            _fit_classifier(net, classifier, saved.shape[0])
        load_named(net, state, section.weights, "weights file")
        lines.append(f"weights from {printable(str(section.weights))}")
    before = net.get_submodule(classifier).out_features
    if _fit_classifier(net, classifier, num_classes):
        why = "fine-tuning" if with_weights and section.weights is not None else "the data's"
        lines.append(f"classifier {classifier} replaced: {before} -> {num_classes} classes ({why})")
    return model, lines + convert_family(net, section.family)


def build_network(section, num_classes: int, in_channels: int, image_size: int,
                  with_weights: bool = True) -> tuple[nn.Module, list[str]]:
    """(network, log lines) for a teacher or student section; `with_weights` False where the
    weights come from a kdforge checkpoint next (resuming, strip, export)."""
    if is_factory(section.model):
        return _factory_network(section, num_classes, torch.zeros(2, in_channels, image_size, image_size), with_weights)
    net, lines = create_model(section.model, num_classes, in_channels, **section.model_args), []
    if with_weights and section.weights is not None:
        load_named(net, read_state_dict(section.weights, "weights file"), section.weights, "weights file")
        lines.append(f"weights from {printable(str(section.weights))}")
    return net, lines + convert_family(net, section.family)
