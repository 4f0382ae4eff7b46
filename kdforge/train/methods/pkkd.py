"""PKKD, kernel-based progressive distillation of adder networks (Xu et al., NeurIPS 2020).

The student is an AdderNet; the teacher is its CNN twin (the same network with every adder
layer an ordinary convolution), initialised afresh and trained at the same time with its own
cross-entropy (progressive: the student always learns from the teacher's current state).
`teacher_checkpoint` starts the twin from trained weights instead (a kdforge teacher checkpoint
of the twin's architecture, e.g. resnet20 for resnet20_adder).

The rebuttal's experiments, as options:
- `kernel: false` matches the layer outputs directly (through the same 1x1 aligner), each
  standardised per channel over the batch first (kdforge's choice: the rebuttal does not say how,
  and raw adder outputs are sums of hundreds of distances whose squared error overflows), and
  `progressive: false` keeps the teacher fixed (no cross-entropy, no gradient, eval mode), which
  needs trained weights: `teacher_checkpoint`, or `teacher: pipeline`. The four combinations are
  the 2x2 ablation of the rebuttal's Table 5.
- `teacher: pipeline` distils from the run's teacher (the teacher stage trains it first) of any
  architecture with as many stages, e.g. a ResNet-152 for a ResNet-18 (its Table 4), and the
  student may be a CNN: a convolution's map is then Gaussian on both sides. Where the matched
  layers differ in width the aligner maps the student's channels to the teacher's; where they
  differ in resolution the student's map is average-pooled to the teacher's (kdforge's choice).

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
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from kdforge.errors import UserError
from kdforge.nn.adder import AdderConv2d
from kdforge.train.methods.base import Distiller, NoOptions
from kdforge.train.models.families import ADDER, family_of_model
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
    for path, stage in zip(model.stage_paths, model.stages):
        convs = [name for name, m in stage.named_modules() if isinstance(m, kind) and "shortcut" not in name]
        if convs:
            names.append(f"{path}.{convs[-1]}" if convs[-1] else path)
    return names


class PKKDOptions(NoOptions):
    feature_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    kernel: bool = Field(True, description="map features by the paper's kernels; false matches the layer outputs directly")
    progressive: bool = Field(True, description="the teacher trains alongside; false keeps a fixed, trained teacher")
    teacher: Literal["twin", "pipeline"] = Field("twin", description="twin: the student's CNN twin; pipeline: the run's teacher")
    teacher_checkpoint: Optional[Path] = Field(None, description="start the CNN twin from these weights")

    @model_validator(mode="after")
    def _fixed_teacher_has_weights(self):
        if self.teacher == "pipeline" and self.teacher_checkpoint is not None:
            raise ValueError("teacher_checkpoint starts the twin; with teacher: pipeline the run's teacher section says where its weights come from")
        if not self.progressive and self.teacher == "twin" and self.teacher_checkpoint is None:
            raise ValueError("progressive: false keeps the teacher fixed, so it needs trained weights: set teacher_checkpoint, "
                             "or teacher: pipeline to use the run's teacher")
        return self


@register_method("pkkd")
class PKKD(Distiller):
    Options = PKKDOptions
    needs_teacher = False
    trains_teacher = True
    training_only = ("teacher", "aligners")
    beats_baseline = True  # the paper's claim: PKKD's AdderNet beats the AdderNet trained alone

    @classmethod
    def uses_teacher(cls, options: PKKDOptions) -> bool:
        return options.teacher == "pipeline"

    def __init__(self, student, teacher, options, example=None):
        layers = last_conv_per_stage(student, (AdderConv2d, nn.Conv2d))
        if not layers:
            raise UserError("pkkd matches the last convolution of every stage, and the student's stages hold none; name stages "
                            "that end in blocks of convolutions with the config key 'stages'.")
        if options.teacher == "twin" and family_of_model(student) is not ADDER:
            raise UserError("pkkd with teacher: twin distils AdderNet students; choose a *_adder model, or teacher: pipeline for a CNN student.")
        self.trains_teacher = options.progressive
        super().__init__(student, cnn_twin(student) if teacher is None else teacher, options, example)
        if options.teacher_checkpoint is not None:
            blob = load_torch(options.teacher_checkpoint, "options.teacher_checkpoint")
            load_into(self.teacher.load_state_dict, network_weights(blob), options.teacher_checkpoint)
        self.layers, self.teacher_layers = layers, last_conv_per_stage(self.teacher, nn.Conv2d)
        if len(self.layers) != len(self.teacher_layers):
            raise UserError(f"pkkd matches the last convolution of every stage; the student has {len(self.layers)} stages and "
                            f"the teacher {len(self.teacher_layers)}; choose networks with as many stages.")
        s_modules, t_modules = dict(student.named_modules()), dict(self.teacher.named_modules())
        self.aligners = nn.ModuleList(nn.Conv2d(s_modules[s].out_channels, t_modules[t].out_channels, 1)
                                      for s, t in zip(self.layers, self.teacher_layers))

    @staticmethod
    def _run_capturing(model: nn.Module, images: torch.Tensor, layers: list[str]):
        """The model's logits and (module, input, output) of each matched layer; hooks live only for this call."""
        captured, modules = {}, dict(model.named_modules())
        handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, (m, i[0], o)))
                   for name in layers]
        try:
            return model(images), [captured[name] for name in layers]
        finally:
            for handle in handles:
                handle.remove()

    def _map(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.options.kernel:  # standardised per channel over the batch, as batch norm would
            return F.batch_norm(y, None, None, training=True)
        return laplacian_kernel(y) if isinstance(module, AdderConv2d) else gaussian_kernel(module, x, y)

    def forward(self, images, labels, progress):
        logits, student_layers = self._run_capturing(self.student, images, self.layers)
        with self.no_teacher_grad():
            teacher_logits, teacher_layers = self._run_capturing(self.teacher, images, self.teacher_layers)
        feature = logits.new_zeros(())
        for (s_module, s_x, s_y), (t_module, t_x, t_y), aligner in zip(student_layers, teacher_layers, self.aligners):
            target = self._map(t_module, t_x, t_y).detach()
            mapped = aligner(self._map(s_module, s_x, s_y))
            if mapped.shape[-2:] != target.shape[-2:]:
                mapped = F.adaptive_avg_pool2d(mapped, target.shape[-2:])
            feature = feature + F.mse_loss(mapped, target)
        o = self.options
        losses = {
            "ce": F.cross_entropy(logits, labels),
            "kd": o.kd_weight * kd_loss(logits, teacher_logits.detach(), o.temperature),
            "kernel" if o.kernel else "feature": o.feature_weight * feature,
        }
        if o.progressive:
            losses["ce_teacher"] = F.cross_entropy(teacher_logits, labels)
        return logits, losses
