"""TOFD, task-oriented feature distillation (Zhang et al., NeurIPS 2020).

Student and teacher both carry auxiliary classifiers on every stage (nn/aux_heads.py); the
teacher is trained with its own heads in the teacher stage (method `tofd_teacher`: cross-entropy
on every head). For every head i of the student:
    CE(s_i, y) + soft cross-entropy to the teacher's head i at temperature T
    + alpha * || link_i(f_s_i) - f_t_i ||_2            (the heads' pooled, task-oriented features)
and for every feature-resizing layer link_i (linear, no bias):
    beta * ( ||W W^T - I||_F + ||W^T W - I||_F ).
Weights: alpha = 0.03 and beta = 0.5 by default, the values the authors state (the seed's
rebuttal); the official script's defaults are alpha = 0.05 and beta = 0.03, which `alpha: 0.05,
beta: 0.03` reproduces. Temperature: the official schedule, T = 1 + t * (epoch + 1) / epochs with
t = 3, constant within an epoch (epochs counted from 0, so T reaches 4 in the last epoch). As in
the public code, the soft cross-entropy is not scaled by T^2 and the feature distance is the L2
norm over the whole batch (torch.dist). Heads, links and the teacher's heads are stripped: the
student ships with its own main classifier, the last head.
"""

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdforge.errors import UserError
from kdforge.nn.aux_heads import AuxiliaryHeads
from kdforge.train.methods.base import Distiller, NoOptions
from kdforge.train.weights import submodule_state
from kdforge.train.methods.registry import register_method


def soft_cross_entropy(student_logits, teacher_logits, temperature: float):
    return -(F.softmax(teacher_logits / temperature, 1) * F.log_softmax(student_logits / temperature, 1)).sum(1).mean()


def orthogonality(weight: torch.Tensor) -> torch.Tensor:
    eye_out = torch.eye(weight.shape[0], device=weight.device)
    eye_in = torch.eye(weight.shape[1], device=weight.device)
    return torch.dist(weight @ weight.t(), eye_out) + torch.dist(weight.t() @ weight, eye_in)


def _num_classes(model: nn.Module) -> int:
    return model.fc.out_features


@register_method("tofd_teacher")
class TOFDTeacher(Distiller):
    """Trains a network with TOFD's auxiliary heads: cross-entropy on every head (the teacher stage of TOFD)."""

    needs_teacher = False
    training_only = ("heads",)

    def __init__(self, student, teacher, options, example=None):
        super().__init__(student, None, options, example)
        self.heads = AuxiliaryHeads(student, example, _num_classes(student))

    def forward(self, images, labels, progress):
        outputs = self.heads(self.student, self.student.forward_stages(images))
        return outputs[-1][0], {"ce": sum(F.cross_entropy(logits, labels) for logits, _ in outputs)}


class TOFDOptions(NoOptions):
    alpha: float = Field(0.03, ge=0, description="weight of the feature distance")
    beta: float = Field(0.5, ge=0, description="weight of the orthogonality penalty")
    temperature_rise: float = Field(3.0, ge=0, description="T is 1 + this * (epoch + 1) / epochs")


@register_method("tofd")
class TOFD(Distiller):
    Options = TOFDOptions
    teacher_method = "tofd_teacher"
    training_only = ("teacher", "teacher_heads", "heads", "links")
    teacher_modules = ("teacher", "teacher_heads")

    def __init__(self, student, teacher, options, example=None):
        super().__init__(student, teacher, options, example)
        self.heads = AuxiliaryHeads(student, example, _num_classes(student))
        self.teacher_heads = AuxiliaryHeads(teacher, example, _num_classes(teacher)).requires_grad_(False)
        self.links = nn.ModuleList(
            nn.Linear(self.heads.feature_dim, self.teacher_heads.feature_dim, bias=False) for _ in range(len(student.stages))
        )
        if len(student.stages) != len(teacher.stages):
            raise UserError(f"tofd pairs the heads of student and teacher stage by stage; the student has {len(student.stages)} stages, "
                            f"the teacher {len(teacher.stages)}.")

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_heads.eval()
        return self

    def load_teacher_state(self, state: dict) -> None:
        super().load_teacher_state(state)
        self.teacher_heads.load_state_dict(submodule_state(state, "heads."))

    def forward(self, images, labels, progress):
        student_out = self.heads(self.student, self.student.forward_stages(images))
        with torch.no_grad():
            teacher_out = self.teacher_heads(self.teacher, self.teacher.forward_stages(images))
        temperature = 1.0 + self.options.temperature_rise * (self.epoch(progress) + 1) / self.epochs
        ce = kd = feature = 0.0
        for (s_logits, s_feat), (t_logits, t_feat), link in zip(student_out, teacher_out, self.links):
            ce = ce + F.cross_entropy(s_logits, labels)
            kd = kd + soft_cross_entropy(s_logits, t_logits, temperature)
            feature = feature + torch.dist(link(s_feat), t_feat)
        orth = sum(orthogonality(link.weight) for link in self.links)
        return student_out[-1][0], {"ce": ce, "kd": kd, "feature": self.options.alpha * feature, "orthogonal": self.options.beta * orth}
