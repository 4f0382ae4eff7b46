"""Structural pruning of a trained network to a cost budget (a student's `prune:`), by
Torch-Pruning (DepGraph, Fang et al., CVPR 2023): channels and filters are removed, not masked,
and the layers coupled to them (residual additions, concatenations, depthwise groups, batch norms,
the classifier's inputs) shrink with them.

Every prunable group loses the same share of its channels (Torch-Pruning's uniform, local
pruning), ranked within the group by the importance the config names: `magnitude` (L2 norm of the
group's weights), `bn_scale` (|gamma| of its batch norms) or `taylor` (first-order Taylor,
|w * dL/dw|, on a batch of training images). A one-shot cut's channel counts are multiples of
`round_to` (ONNX Runtime's CPU kernels block channels by 8 or 16; benchmarks/prune_latency.py:
unrounded cuts ran slower than the uncut network). The classifier's outputs (the classes) and
the layers named in `keep` keep their width.

A budget counts MACs or parameters (kdforge's counts, so the budget is met in the figures the
report shows) or the estimated latency on a target (kdforge.profile.estimates, the report's own).
The share is searched on a grid of 21, refined by bisection where the cost crosses the budget;
Torch-Pruning's quick count ranks the cuts and the budget's own figure decides between the
nearest: the cut whose cost comes closest to the budget without passing it by more than 2%.

One-shot, or iterative (`prune_in_steps`): N cuts, cut k searched for budget^(k/N) of the original
cost, each but the last followed by recovery training with the student's method, so the
importances of the next cut are those of a network that has adapted to the last. Each cut keeps
channel counts in multiples of `round_to`, so where that grid is coarse (16-channel layers cut by
8) the last cut can land further under the budget than one cut would.
"""

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.profile.counts import count_costs

SHARES = [k / 24 for k in range(1, 22)]  # of a group's channels; rounded channel counts make the cost not monotonic in it
REFINEMENTS = 4  # bisection steps between two grid points that straddle the budget
COUNTED = 4  # cuts nearest the budget by Torch-Pruning's quick count that kdforge's own count then decides between
TOLERANCE = 0.02  # a cost this far above the budget still meets it


@dataclass(frozen=True)
class Pruned:
    model: nn.Module
    share: float  # of every group's channels removed
    cost: float  # the budgeted count, pruned / unpruned
    cost_before: float
    cost_after: float


@dataclass(frozen=True)
class Measure:
    """What a budget counts: `exact` is the figure the report shows, `quick` ranks cuts cheaply."""
    name: str
    exact: Callable[[nn.Module], float]
    quick: Callable[[nn.Module], float]


def budget_measure(name: str, input_shape: tuple[int, ...], target: str | None = None, precision: str = "fp32") -> Measure:
    """The measure "macs" or "params" (kdforge's counts, Torch-Pruning's quick count to rank), or
    "latency" (kdforge's estimate on `target` at `precision`, from the counts of every cut: no
    cheaper figure follows launch-bound latency)."""
    import torch_pruning as tp

    example = torch.zeros(input_shape)

    def quick(model: nn.Module) -> float:
        macs, params = tp.utils.count_ops_and_params(model, example)
        return float(macs if name == "macs" else params)

    if name == "params":
        return Measure(name, lambda model: float(sum(p.numel() for p in model.parameters())), quick)
    if name == "macs":
        return Measure(name, lambda model: float(count_costs(model, input_shape)["totals"]["macs"]), quick)
    from kdforge.profile.estimates import estimate
    from kdforge.profile.targets import target as named_target

    def estimated_ms(model: nn.Module) -> float:
        return estimate(count_costs(model, input_shape), named_target(target), precision)["total_ms"]
    return Measure(f"estimated latency on {target}", estimated_ms, estimated_ms)


def prune_to_budget(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cost: Measure, budget: float,
                    importance: str, keep: list[nn.Module], round_to: int = 1) -> Pruned:
    """The copy of `model` whose `cost` comes closest to `budget` of `model`'s without passing it by
    more than TOLERANCE, its pruned channel counts multiples of `round_to`; `images` (N, C, H, W)
    and `labels` trace the graph and, for Taylor importance, give the gradients. ValueError where
    no share of channels gets there."""
    quick_before = cost.quick(model)
    tried: dict[tuple, tuple[float, nn.Module, float]] = {}  # by structure: many shares cut the same channels

    def quick_share(share: float) -> float:
        pruned = _pruned_copy(model, images, labels, share, importance, keep, round_to)
        structure = tuple(tuple(p.shape) for p in pruned.parameters())
        if structure not in tried:
            tried[structure] = share, pruned, cost.quick(pruned) / quick_before
        return tried[structure][2]

    grid = {share: quick_share(share) for share in SHARES}
    for low, high in zip(SHARES, SHARES[1:]):  # between grid points whose costs straddle the budget, bisect
        if grid[low] > budget >= grid[high]:
            for _ in range(REFINEMENTS):
                middle = (low + high) / 2
                low, high = (middle, high) if quick_share(middle) > budget else (low, middle)
    before = cost.exact(model)
    nearest = sorted(tried.values(), key=lambda t: abs(t[2] - budget))[:COUNTED]
    counted = [(share, pruned, cost.exact(pruned)) for share, pruned, _ in nearest]
    within = [t for t in counted if t[2] <= budget * (1 + TOLERANCE) * before]
    if not within:
        least = min(share for *_, share in tried.values())
        raise ValueError(f"the least it keeps, with up to {SHARES[-1]:.0%} of every prunable layer's channels removed, is "
                         f"about {least:.3f} of its {cost.name}")
    share, pruned, after = min(within, key=lambda t: abs(t[2] / before - budget))
    return Pruned(pruned, share, after / before, before, after)


def prune_in_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cost: Measure, budget: float, importance: str,
                   keep: Callable[[nn.Module], list[nn.Module]], round_to: int, steps: int,
                   recover: Callable[[nn.Module, int], nn.Module]) -> Pruned:
    """`model` cut to `budget` of its cost in `steps` cuts, cut k searched for budget^(k/steps) of
    the original cost, each but the last followed by `recover(model, k)`, which trains the cut model
    and returns it; `keep` gives the layers of a model whose width stays."""
    before = cost.exact(model)
    for step in range(1, steps + 1):
        target = budget ** (step / steps) * before / cost.exact(model)
        pruned = prune_to_budget(model, images, labels, cost, min(target, 1.0), importance, keep(model), round_to)
        model = pruned.model if step == steps else recover(pruned.model, step)
    return Pruned(model, pruned.share, pruned.cost_after / before, before, pruned.cost_after)


def _pruned_copy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, share: float, importance: str,
                 keep: list[nn.Module], round_to: int) -> nn.Module:
    import torch_pruning as tp

    copied = copy.deepcopy(model).eval()
    kept = [dict(zip(map(id, model.modules()), copied.modules()))[id(m)] for m in keep]
    pruner = tp.pruner.MetaPruner(copied, images[:2], importance=_importance(importance), pruning_ratio=share,
                                  ignored_layers=kept, round_to=None if round_to == 1 else round_to)
    if importance == "taylor":
        copied.zero_grad()
        F.cross_entropy(copied(images), labels).backward()
    pruner.step()
    copied.zero_grad(set_to_none=True)
    return copied


def _importance(name: str):
    import torch_pruning as tp

    return {"magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
            "bn_scale": tp.importance.BNScaleImportance,
            "taylor": tp.importance.TaylorImportance}[name]()
