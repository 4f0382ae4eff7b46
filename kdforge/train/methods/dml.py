"""DML, deep mutual learning (Zhang et al., CVPR 2018): two students teach each other.

A peer of the student's architecture, initialised afresh, trains alongside; each network gets
cross-entropy plus KL(other || self) on softmax outputs (temperature 1), the other's
distribution held fixed in its term. Both are optimised together (the paper alternates their
updates; with one optimizer step over the summed losses the gradients are the same per step).
No teacher; the peer is stripped.
"""

import copy

import torch.nn.functional as F

from kdforge.train.methods.base import Distiller
from kdforge.train.methods.kd import kd_loss
from kdforge.train.methods.registry import register_method
from kdforge.train.models.base import reinitialize


@register_method("dml")
class MutualLearning(Distiller):
    needs_teacher = False
    training_only = ("peer",)
    teacher_modules = ("peer",)

    def __init__(self, student, teacher, options, example=None):
        super().__init__(student, None, options, example)
        self.peer = reinitialize(copy.deepcopy(student))

    def forward(self, images, labels, progress):
        logits, peer_logits = self.student(images), self.peer(images)
        return logits, {
            "ce": F.cross_entropy(logits, labels),
            "ce_peer": F.cross_entropy(peer_logits, labels),
            "kl": kd_loss(logits, peer_logits.detach(), 1.0),
            "kl_peer": kd_loss(peer_logits, logits.detach(), 1.0),
        }
