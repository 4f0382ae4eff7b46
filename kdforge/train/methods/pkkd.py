"""PKKD, kernel-based progressive distillation of adder networks (Xu et al., NeurIPS 2020).

The student is an AdderNet; the teacher is its CNN twin (the same network with every adder
layer an ordinary convolution), initialised afresh and trained at the same time with its own
cross-entropy (progressive: the student always learns from the teacher's current state).
`teacher_checkpoint` starts the twin from trained weights instead (a kdforge teacher checkpoint
of the twin's architecture, e.g. resnet20 for resnet20_adder).

At the last convolution of every stage, both outputs are mapped by the paper's kernels, which
need only each layer's own output and the norms of patches and filters:
    CNN, Gaussian:   exp(-||x - f||^2 / (2 sigma_c^2)),  ||x - f||^2 = ||x||^2 + ||f||^2 - 2 x.f
    ANN, Laplacian:  exp(-||x - f||_1 / sigma_a) = exp(Y_ann / sigma_a)
A 1x1 convolution on the ANN side aligns its kernel map to the CNN's, matched by mean squared
error (the teacher's map is the target and gets no gradient from it). The logits are distilled
by KD (temperature T, T^2 scaling); the student keeps cross-entropy.

Choices the paper leaves open (its sigmas, weights, temperature and layers could not be
confirmed; measured on digits, see benchmarks/README.md):
- sigma: set per layer and batch from the data, sigma_a = mean L1 distance and
  2 sigma_c^2 = mean squared distance (detached), so both kernels sit near exp(-1) instead of
  underflowing to 0 for fixed sigmas on layers of very different fan-in;
- layers: the last convolution of every stage; feature weight 1, KD weight 1 at T = 4.
"""

import copy
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdforge.errors import UserError
from kdforge.nn.adder import AdderConv2d
from kdforge.train.methods.base import Distiller, NoOptions
from kdforge.train.methods.kd import kd_loss
from kdforge.train.methods.registry import register_method
from kdforge.train.models.base import kaiming_init
from kdforge.train.weights import load_into, network_weights
from kdforge.untrusted import load_torch


def cnn_twin(ann: nn.Module) -> nn.Module:
    """The AdderNet with every adder layer an ordinary, freshly initialised convolution."""
    twin = copy.deepcopy(ann)
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, AdderConv2d):
                setattr(module, name, nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                                child.stride, child.padding, bias=False))
    return kaiming_init(twin)


def gaussian_kernel(conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, sigma_sq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """exp(-||x - f||^2 / (2 sigma^2)) for every patch x and filter f of a convolution with output y."""
    ones = torch.ones(1, *conv.weight.shape[1:], device=x.device, dtype=x.dtype)
    patch_sq = F.conv2d(x * x, ones, stride=conv.stride, padding=conv.padding)          # (N, 1, H, W)
    filter_sq = conv.weight.pow(2).sum((1, 2, 3)).view(1, -1, 1, 1)                      # (1, O, 1, 1)
    distance_sq = (patch_sq + filter_sq - 2 * y).clamp_min(0)
    if sigma_sq is None:
        sigma_sq = distance_sq.mean().detach() / 2
    return torch.exp(-distance_sq / (2 * sigma_sq))


def laplacian_kernel(y: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
    """exp(-||x - f||_1 / sigma) = exp(Y / sigma) for an adder layer's output Y = -||x - f||_1."""
    if sigma is None:
        sigma = (-y).mean().detach().clamp_min(1e-6)
    return torch.exp(y / sigma)


def last_conv_per_stage(model: nn.Module, kind) -> list[str]:
    names = []
    for i, stage in enumerate(model.stages):
        convs = [name for name, m in stage.named_modules() if isinstance(m, kind) and "shortcut" not in name]
        if convs:
            names.append(f"stages.{i}.{convs[-1]}")
    return names


class PKKDOptions(NoOptions):
    feature_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    teacher_checkpoint: Optional[Path] = Field(None, description="start the CNN twin from these weights")


@register_method("pkkd")
class PKKD(Distiller):
    Options = PKKDOptions
    needs_teacher = False
    trains_teacher = True
    training_only = ("teacher", "aligners")

    def __init__(self, student, teacher, options, example=None):
        layers = last_conv_per_stage(student, AdderConv2d)
        if not layers:
            raise UserError("pkkd distils AdderNet students; choose a *_adder model for this student.")
        super().__init__(student, cnn_twin(student), options, example)
        if options.teacher_checkpoint is not None:
            blob = load_torch(options.teacher_checkpoint, "options.teacher_checkpoint")
            load_into(self.teacher.load_state_dict, network_weights(blob), options.teacher_checkpoint)
        self.layers = layers
        channels = dict(student.named_modules())
        self.aligners = nn.ModuleList(nn.Conv2d(channels[n].out_channels, channels[n].out_channels, 1) for n in layers)

    def _run_capturing(self, model: nn.Module, images: torch.Tensor):
        """The model's logits and (module, input, output) of each matched layer; hooks live only for this call."""
        captured, modules = {}, dict(model.named_modules())
        handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, (m, i[0], o)))
                   for name in self.layers]
        try:
            return model(images), [captured[name] for name in self.layers]
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, images, labels, progress):
        logits, student_layers = self._run_capturing(self.student, images)
        teacher_logits, teacher_layers = self._run_capturing(self.teacher, images)
        feature = 0.0
        for (_, _, y_ann), (conv, x_cnn, y_cnn), aligner in zip(student_layers, teacher_layers, self.aligners):
            target = gaussian_kernel(conv, x_cnn, y_cnn).detach()
            feature = feature + F.mse_loss(aligner(laplacian_kernel(y_ann)), target)
        o = self.options
        return logits, {
            "ce": F.cross_entropy(logits, labels),
            "ce_teacher": F.cross_entropy(teacher_logits, labels),
            "kd": o.kd_weight * kd_loss(logits, teacher_logits.detach(), o.temperature),
            "kernel": o.feature_weight * feature,
        }
