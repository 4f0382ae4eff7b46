"""Where a model kdforge did not define has its stages and classifier, found from one forward
pass on an example (`discover`), not from how its modules are held.

Hooks on every module record the order in which they return and their outputs. The candidates
are modules called once whose output is a feature map (N, C, H, W) or tokens (N, L, C), larger
than one position (not a squeeze-excite or a global pool). Other modules are looked through to
their children: containers the forward never calls as a whole (nn.ModuleDict, nn.ModuleList, a
Sequential indexed in a loop) and modules that return a tuple or an output object (Hugging
Face's encoders), so blocks held in any of them take their place in call order.

A block is a candidate with a weight matrix or kernel below it (a convolution, an adder layer,
a linear layer: a norm-and-activation module is a layer). The level stages come from is the
shallowest one with two or more blocks (a level with one block is descended into, and without
blocks its layers are taken: a VGG's `features`); a block whose
own blocks span several resolutions in order holds stages itself (RegNet's trunk, timm's `blocks`)
and is replaced by them, the blocks before it being the stem. A stage ends at the last block
before each change of resolution (by a quarter or more, so a valid convolution's two lost pixels
do not count, in either direction: an encoder-decoder's up-sampling too) and at the last one;
a stage without weights (a VGG's last max-pool) is none, nor is a first stage that holds the
first layer to run (a deep stem, a patch embedding), where other stages follow.
The classifier is the last nn.Linear whose
output has the model's logits' shape.

Where the choice is uncertain (one stage: no resolution change between several blocks, as in a
vision transformer), the notes name the candidates with their shapes and the config key
(`stages`) that picks others.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from kdforge.errors import UserError, reason
from kdforge.train.models.outputs import OutputKey, logits_of

RESOLUTION_CHANGE = 0.75  # a side (or a token count's square root) this much smaller or larger


@dataclass
class Discovery:
    stages: list[str]
    classifier: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _Trace:
    """Per module path, its outputs' shapes (None where not a tensor) and when it first returned."""
    shapes: dict[str, list] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)
    output: object = None

    def shape(self, path: str) -> tuple | None:
        calls = self.shapes.get(path, [])
        return calls[0] if len(calls) == 1 else None


def _trace(net: nn.Module, example: torch.Tensor, source: str) -> _Trace:
    trace = _Trace()

    def record(path: str):
        def hook(_module, _inputs, output):
            shape = tuple(output.shape) if torch.is_tensor(output) else None
            trace.shapes.setdefault(path, []).append(shape)
            trace.returned.setdefault(path, len(trace.returned))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in net.named_modules() if n]
    try:
        with torch.no_grad():
            trace.output = net.eval()(example)
    except Exception as e:  # noqa: BLE001 - the user's model, which may refuse the data's images in any way
        raise UserError(f"{source} fails on the data's images ({'x'.join(map(str, example.shape))}): {reason(e)}; give "
                        f"it model_args that fit them (its input size and channels).") from None
    finally:
        for hook in hooks:
            hook.remove()
    return trace


def _side(shape: tuple) -> float:
    """A map's side, or the square root of a token count, for comparing resolutions."""
    return (shape[2] * shape[3]) ** 0.5 if len(shape) == 4 else shape[1] ** 0.5


def _is_candidate(shape: tuple | None, batch: int) -> bool:
    return shape is not None and shape[0] == batch and len(shape) in (3, 4) and _side(shape) > 1


def _is_block(module: nn.Module) -> bool:
    return any(p.ndim >= 2 for child in module.children() for p in child.parameters())


class _Finder:
    def __init__(self, net: nn.Module, trace: _Trace, batch: int):
        self.net, self.trace, self.batch = net, trace, batch

    def chain(self, prefix: str, parent: nn.Module) -> list[str]:
        """The candidates among `parent`'s children, in call order; other modules looked through
        (containers never called, modules returning a tuple or an output object)."""
        found = []
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            if _is_candidate(self.trace.shape(path), self.batch):
                found.append(path)
            elif any(True for _ in child.children()):
                found.extend(self.chain(f"{path}.", child))
        return sorted(found, key=self.trace.returned.__getitem__)

    def blocks(self, prefix: str, parent: nn.Module) -> list[str]:
        return [p for p in self.chain(prefix, parent) if _is_block(self.net.get_submodule(p))]

    def holds_stages(self, path: str) -> list[str]:
        """The blocks of `path` where they span several resolutions, in order; else []."""
        inner = self.blocks(f"{path}.", self.net.get_submodule(path))
        sides = [_side(self.trace.shape(p)) for p in inner]
        ordered = sides == sorted(sides) or sides == sorted(sides, reverse=True)
        return inner if len(inner) >= 2 and ordered and len(_ends(inner, sides)) >= 2 else []

    def refined(self, blocks: list[str]) -> list[str]:
        out, expanded = [], False
        for path in blocks:
            inner = self.holds_stages(path)
            if inner:
                out = out if expanded else []  # the blocks before the first that holds stages: the stem
                out.extend(self.refined(inner))
                expanded = True
            else:
                out.append(path)
        return out

    def level(self) -> tuple[list[str], str]:
        """(the blocks or layers stages are chosen among, "blocks" or "layers")."""
        prefix, parent = "", self.net
        while True:
            chain = self.chain(prefix, parent)
            blocks = [p for p in chain if _is_block(self.net.get_submodule(p))]
            if len(blocks) >= 2:
                return self.refined(blocks), "blocks"
            if len(blocks) == 1:
                prefix, parent = f"{blocks[0]}.", self.net.get_submodule(blocks[0])
                continue
            return [p for p in chain if len(self.trace.shape(p)) == 4], "layers"


def _ends(paths: list[str], sides: list[float]) -> list[str]:
    ends = []
    for i, path in enumerate(paths):
        if i + 1 == len(paths) or not RESOLUTION_CHANGE < sides[i + 1] / sides[i] < 1 / RESOLUTION_CHANGE:
            ends.append(path)
    return ends


def _weighted(net: nn.Module, candidates: list[str], ends: list[str]) -> list[str]:
    """`ends` less those whose stage has no weights (a VGG's last max-pool)."""
    kept, start = [], 0
    for end in ends:
        stop = candidates.index(end) + 1
        if any(p.ndim >= 2 for path in candidates[start:stop] for p in net.get_submodule(path).parameters()):
            kept.append(end)
        start = stop
    return kept


def discover(net: nn.Module, example: torch.Tensor, source: str, output: OutputKey = None) -> Discovery:
    """The stages and classifier of `net` from one forward pass on `example` (a batch of two or
    more), its logits where `output` says (kdforge.train.models.outputs)."""
    trace = _trace(net, example, source)
    logits = logits_of(trace.output, output, source)
    linears = [p for p in sorted(trace.shapes, key=trace.returned.__getitem__)
               if isinstance(net.get_submodule(p), nn.Linear) and trace.shape(p) == tuple(logits.shape)]
    if not linears:
        raise UserError(f"{source}: no nn.Linear gives the logits ({tuple(logits.shape)}), so kdforge cannot tell its "
                        f"classifier; name it with the config key 'classifier' (and 'output' where the forward returns more "
                        f"than the logits).")
    finder = _Finder(net, trace, example.shape[0])
    candidates, kind = finder.level()
    stages = _weighted(net, candidates, _ends(candidates, [_side(trace.shape(p)) for p in candidates])) if len(candidates) >= 2 else []
    first = next(p for p in sorted(trace.returned, key=trace.returned.__getitem__)
                 if any(w.ndim >= 2 for w in net.get_submodule(p).parameters(recurse=False)))
    if len(stages) > 1 and first.startswith(f"{stages[0]}."):  # the stem, which reads the image
        stages = stages[1:]
    if not stages:
        raise UserError(f"{source}: kdforge found no feature maps to read; name the stages with the config key 'stages'.")
    notes = []
    if len(stages) == 1:
        inner = candidates if len(candidates) >= 3 else finder.blocks(f"{stages[0]}.", net.get_submodule(stages[0]))
        if len(inner) >= 3:
            shape = "x".join(map(str, trace.shape(inner[-1])[1:]))
            notes.append(f"one stage ({stages[0]}): no change of resolution among {kind} {inner[0]} ... {inner[-1]} "
                         f"({len(inner)}, each {shape}); to distil more, name them with the config key 'stages', e.g. "
                         f"stages: [{', '.join(inner[len(inner) // 3 - 1::len(inner) // 3][-3:])}]")
    return Discovery(stages, linears[-1], notes)
