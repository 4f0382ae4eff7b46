"""Structural pruning of a trained network to a cost budget (a student's `prune:`), by
Torch-Pruning (DepGraph, Fang et al., CVPR 2023): channels and filters are removed, not masked,
and the layers coupled to them (residual additions, concatenations, depthwise groups, batch norms,
the classifier's inputs) shrink with them.

Every prunable group loses the same share of its channels (Torch-Pruning's uniform, local
pruning), ranked within the group by the importance the config names: `magnitude` (L2 norm of the
group's weights), `bn_scale` (|gamma| of its batch norms) or `taylor` (first-order Taylor,
|w * dL/dw|, on a batch of training images). The share is found by bisection on kdforge's own MAC
or parameter count (kdforge.profile.counts), so the budget is met in the figures the report
shows: of the shares tried, the one whose cost comes closest to the budget without passing it by
more than 2%. The classifier's outputs (the
classes) and the layers named in `keep` keep their width.

Departure from the library's iterative schedule: pruning here is one-shot, then the student's
method recovers it (KD from the unpruned teacher by default); Torch-Pruning's iterative steps
without training between them rank channels as one shot does for these importances.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.profile.counts import count_costs

BISECTION_STEPS = 10
MAX_SHARE = 0.9  # of a group's channels: a layer keeps at least one in ten
TOLERANCE = 0.02  # a cost this far above the budget still meets it


@dataclass(frozen=True)
class Pruned:
    model: nn.Module
    share: float  # of every group's channels removed
    cost: float  # the budgeted count, pruned / unpruned
    cost_before: int
    cost_after: int


def prune_to_budget(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, measure: str, budget: float,
                    importance: str, keep: list[nn.Module]) -> Pruned:
    """The copy of `model` whose `measure` ("macs" or "params") comes closest to `budget` of
    `model`'s; `images` (N, C, H, W) and `labels` trace the graph and, for Taylor importance, give
    the gradients."""
    input_shape = (1, *images.shape[1:])
    before = _cost(model, measure, input_shape)
    tried: dict[float, tuple[nn.Module, int]] = {}

    def share_of_cost(share: float) -> float:
        pruned = _pruned_copy(model, images, labels, share, importance, keep)
        tried[share] = pruned, _cost(pruned, measure, input_shape)
        return tried[share][1] / before

    low, high = 0.0, MAX_SHARE
    for _ in range(BISECTION_STEPS):  # the cost falls in steps of a channel as the share grows
        middle = (low + high) / 2
        low, high = (middle, high) if share_of_cost(middle) > budget else (low, middle)
    within = [share for share, (_, cost) in tried.items() if cost <= budget * (1 + TOLERANCE) * before]
    if not within:
        least = min(cost for _, cost in tried.values()) / before
        raise ValueError(f"the least it keeps, with up to {MAX_SHARE:.0%} of every prunable layer's channels removed, is "
                         f"{least:.3f} of its {measure}")
    share = min(within, key=lambda s: abs(tried[s][1] / before - budget))
    model, cost = tried[share]
    return Pruned(model, share, cost / before, before, cost)


def cost_share(pruned: nn.Module, unpruned: nn.Module, measure: str, input_shape: tuple[int, ...]) -> float:
    """`pruned`'s `measure` as a share of `unpruned`'s."""
    return _cost(pruned, measure, input_shape) / _cost(unpruned, measure, input_shape)


def _cost(model: nn.Module, measure: str, input_shape: tuple[int, ...]) -> int:
    if measure == "params":
        return sum(p.numel() for p in model.parameters())
    return int(count_costs(model, input_shape)["totals"]["macs"])


def _pruned_copy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, share: float, importance: str,
                 keep: list[nn.Module]) -> nn.Module:
    import torch_pruning as tp

    copied = copy.deepcopy(model).eval()
    kept = [dict(zip(map(id, model.modules()), copied.modules()))[id(m)] for m in keep]
    pruner = tp.pruner.MetaPruner(copied, images[:2], importance=_importance(importance), pruning_ratio=share,
                                  ignored_layers=kept)
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
