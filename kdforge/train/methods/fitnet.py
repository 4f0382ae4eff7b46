"""FitNet (Romero et al., ICLR 2015): the student's guided layer regresses the teacher's hint layer.

A 1x1 convolution + batch norm (the regressor) maps the student's stage output to the
teacher's channels; the loss is the mean squared error to the teacher's stage output, added to
cross-entropy. Departure: the paper trains in two phases (hints first, then KD); this is the
one-phase form of the common benchmarks (CRD, mdistiller), weight 100 on the hint term. The
hint is the middle stage by default; a spatial mismatch is resolved by average pooling the
larger map.
"""

from typing import Optional

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.registry import register_method


def match_spatial(student_map, teacher_map):
    """Average-pools the larger of two maps to the smaller's height and width."""
    hs, ht = student_map.shape[-1], teacher_map.shape[-1]
    if hs > ht:
        student_map = F.adaptive_avg_pool2d(student_map, teacher_map.shape[-2:])
    elif ht > hs:
        teacher_map = F.adaptive_avg_pool2d(teacher_map, student_map.shape[-2:])
    return student_map, teacher_map


class FitNetOptions(NoOptions):
    hint_weight: float = Field(100.0, ge=0)
    stage: Optional[int] = Field(None, description="stage whose output is the hint; default the middle one")


@register_method("fitnet")
class FitNet(Distiller):
    Options = FitNetOptions
    training_only = ("teacher", "regressor")

    def __init__(self, student, teacher, options, example=None):
        super().__init__(student, teacher, options, example)
        stages = len(student.stages)
        self.stage = options.stage if options.stage is not None else stages // 2
        s_channels = student.forward_stages(example)[self.stage].shape[1]
        t_channels = teacher.forward_stages(example)[self.stage].shape[1]
        self.regressor = nn.Sequential(nn.Conv2d(s_channels, t_channels, 1, bias=False), nn.BatchNorm2d(t_channels))

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            hint = self.teacher.forward_stages(images)[self.stage]
        guided, hint = match_spatial(self.regressor(feats[self.stage]), hint)
        return logits, {"ce": F.cross_entropy(logits, labels), "hint": self.options.hint_weight * F.mse_loss(guided, hint)}
