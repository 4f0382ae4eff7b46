"""JointRD, residual distillation (Li et al., NeurIPS 2020): a plain student trained jointly
with its residual teacher.

Student: the teacher's architecture with every shortcut removed. Departure: the public code
keeps the projection shortcut of the first block of stages 2-4; here all shortcuts go, so the
deployed network is convolution, batch norm and ReLU only (no additions, the memory saving the
paper is after). Every convolution inside the stages is Dirac-parametrised (nn/dirac.py,
alpha = 1, beta = 0.1 at start, exempt from weight decay); the stem stays an ordinary convolution.

Joint training: at the split points (the end of every stage but the last; for ResNet-18 and -50
these are the paper's blocks 1, 3, 5 and 2, 6, 12) the student's feature also runs through the
teacher's later stages and classifier (hybrid paths). Loss:
    CE(student) + m(progress) * sum_k CE(hybrid_k) + CE(teacher),
m decaying by cosine from 1 to dc (0.5 on CIFAR) over the first decay_fraction of training
(0.3: the paper's 60 of 200 epochs), then constant. The teacher starts from the teacher stage
and keeps training (its own CE and the hybrid paths' gradients). Stripping folds the Dirac
parametrisation into plain weights and drops teacher and hybrid paths.
"""

import math

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdforge.errors import UserError
from kdforge.nn.dirac import DiracConv2d
from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.registry import register_method
from kdforge.train.models.plain import remove_shortcuts


def hybrid_weight(progress: float, dc: float, decay_fraction: float) -> float:
    if decay_fraction <= 0 or progress >= decay_fraction:
        return dc
    return dc + (1 - dc) * 0.5 * (1 + math.cos(math.pi * progress / decay_fraction))


def _replace_convs(module: nn.Module, make) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, DiracConv2d)):
            setattr(module, name, make(child))
        else:
            _replace_convs(child, make)


def to_plain_dirac(model: nn.Module, alpha: float, beta: float) -> nn.Module:
    remove_shortcuts(model)
    for stage in model.stages:
        _replace_convs(stage, lambda conv: DiracConv2d(conv, alpha, beta))
    return model


def fold_dirac(model: nn.Module) -> nn.Module:
    for stage in model.stages:
        _replace_convs(stage, lambda conv: conv.fold() if isinstance(conv, DiracConv2d) else conv)
    return model


class JointRDOptions(NoOptions):
    dc: float = Field(0.5, ge=0, le=1, description="final weight of the hybrid-path losses")
    decay_fraction: float = Field(0.3, ge=0, le=1, description="share of training over which the weight decays")
    dirac_alpha: float = 1.0
    dirac_beta: float = 0.1


@register_method("jointrd")
class JointRD(Distiller):
    Options = JointRDOptions
    trains_teacher = True
    deploy_transforms = ("plain",)

    def __init__(self, student, teacher, options, example=None):
        super().__init__(to_plain_dirac(student, options.dirac_alpha, options.dirac_beta), teacher, options, example)
        s_shapes = [f.shape for f in student.forward_stages(example)]
        t_shapes = [f.shape for f in teacher.forward_stages(example)]
        if s_shapes != t_shapes:
            raise UserError("jointrd: the student must have the teacher's architecture (its stages' outputs differ); "
                            "set the student's model to the teacher's.")

    def parameter_groups(self):
        no_decay = [p for n, p in self.named_parameters() if n.endswith((".alpha", ".beta"))]
        ids = {id(p) for p in no_decay}
        return [{"params": [p for p in self.parameters() if id(p) not in ids]}, {"params": no_decay, "weight_decay": 0.0}]

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        losses = {"ce": F.cross_entropy(logits, labels), "ce_teacher": F.cross_entropy(self.teacher(images), labels)}
        m = hybrid_weight(progress, self.options.dc, self.options.decay_fraction)
        hybrid = logits.new_zeros(())
        for k in range(len(feats) - 1):
            teacher_rest = self.teacher.forward_stages(feats[k], start=k + 1)[-1]
            hybrid = hybrid + F.cross_entropy(self.teacher.fc(self.teacher.embed(teacher_rest)), labels)
        losses["hybrid"] = m * hybrid
        return logits, losses

    def deployable(self) -> nn.Module:
        import copy

        return fold_dirac(copy.deepcopy(self.student))
