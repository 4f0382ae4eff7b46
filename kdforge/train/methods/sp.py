"""SP, similarity-preserving distillation (Tung & Mori, ICCV 2019).

G = row-normalised (A A^T) for the batch's flattened last-stage activations A, for teacher and
student; the loss is gamma * ||G_t - G_s||_F^2 / b^2 (b the batch size), gamma = 3000 as in
the CRD benchmark, added to cross-entropy. Only similarities within the batch are matched, so
the feature shapes of teacher and student may differ freely.
"""

import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.registry import register_method


def similarity_loss(student_map, teacher_map):
    b = student_map.shape[0]
    g_s = F.normalize(student_map.flatten(1) @ student_map.flatten(1).t(), dim=1)
    g_t = F.normalize(teacher_map.flatten(1) @ teacher_map.flatten(1).t(), dim=1)
    return (g_t - g_s).pow(2).sum() / b**2


class SPOptions(NoOptions):
    gamma: float = Field(3000.0, ge=0)


@register_method("sp")
class SimilarityPreserving(Distiller):
    Options = SPOptions

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            teacher_last = self.teacher.forward_stages(images)[-1]
        return logits, {"ce": F.cross_entropy(logits, labels), "sp": self.options.gamma * similarity_loss(feats[-1], teacher_last)}
