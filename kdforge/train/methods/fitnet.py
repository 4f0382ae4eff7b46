"""FitNet (Romero et al., ICLR 2015): the student's guided layer regresses the teacher's hint layer.

A 1x1 convolution, batch norm and ReLU (the regressor, the references' `ConvReg` with its
default `use_relu=True`) maps the student's stage output to the teacher's channels; the loss is
the mean squared error to the teacher's stage output, weight 100, added to cross-entropy: the
one-phase form of RepDistiller and mdistiller. The hint is the second stage's output by default,
the references' `hint_layer=2` (their feature lists start with the stem). Departures: the paper
trains in two phases (hints first, then KD); where the two maps' sizes differ, kdforge average
pools the larger one, where `ConvReg` uses a strided or transposed convolution (for 2x) or a
larger kernel; the regressor's convolution has no bias, which batch norm after it cancels.
"""

from typing import Optional

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdforge.errors import UserError
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
    stage: Optional[int] = Field(None, ge=0, description="stage whose output is the hint (from 0); default the second")


@register_method("fitnet")
class FitNet(Distiller):
    Options = FitNetOptions
    training_only = ("teacher", "regressor")

    def __init__(self, student, teacher, options, example=None):
        super().__init__(student, teacher, options, example)
        stages = min(len(student.stages), len(teacher.stages))
        self.stage = options.stage if options.stage is not None else min(1, stages - 1)
        if self.stage >= stages:
            raise UserError(f"fitnet: hint stage {self.stage} does not exist; student and teacher have {stages} stages in common (counted from 0).")
        s_channels = student.forward_stages(example)[self.stage].shape[1]
        t_channels = teacher.forward_stages(example)[self.stage].shape[1]
        self.regressor = nn.Sequential(nn.Conv2d(s_channels, t_channels, 1, bias=False), nn.BatchNorm2d(t_channels),
                                       nn.ReLU(inplace=True))

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            hint = self.teacher.forward_stages(images)[self.stage]
        guided, hint = match_spatial(self.regressor(feats[self.stage]), hint)
        return logits, {"ce": F.cross_entropy(logits, labels), "hint": self.options.hint_weight * F.mse_loss(guided, hint)}
