"""RKD, relational knowledge distillation (Park et al., CVPR 2019), on the pooled embeddings.

Distance term: pairwise distances in the batch, each divided by their mean, compared with the
Huber (smooth L1) loss; angle term: cosines of the angles every triplet forms, compared the
same way. Weights 25 and 50 as in the paper, added to cross-entropy. As in the reference code
(RepDistiller's `RKDLoss`), a point's distance to itself is exactly 0 and left out of the mean:
distances are computed directly, not by torch.cdist's matrix-product route (which it takes
above 25 points and which leaves small positive values on the diagonal).
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.registry import register_method


def normalised_distances(embedding: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(embedding, embedding, compute_mode="donot_use_mm_for_euclid_dist")
    return d / d[d > 0].mean().clamp_min(1e-12)


def triplet_angles(embedding: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between k and i, for every (i, j, k)."""
    diff = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), dim=2)  # diff[j, i] = e_i - e_j
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_losses(student_embedding, teacher_embedding) -> tuple[torch.Tensor, torch.Tensor]:
    distance = F.smooth_l1_loss(normalised_distances(student_embedding), normalised_distances(teacher_embedding))
    angle = F.smooth_l1_loss(triplet_angles(student_embedding), triplet_angles(teacher_embedding))
    return distance, angle


class RKDOptions(NoOptions):
    distance_weight: float = Field(25.0, ge=0)
    angle_weight: float = Field(50.0, ge=0)


@register_method("rkd")
class RelationalKD(Distiller):
    Options = RKDOptions

    def forward(self, images, labels, progress):
        _, embedding, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            teacher_embedding = self.teacher.embed(self.teacher.forward_stages(images)[-1])
        distance, angle = rkd_losses(embedding, teacher_embedding)
        return logits, {
            "ce": F.cross_entropy(logits, labels),
            "rkd_distance": self.options.distance_weight * distance,
            "rkd_angle": self.options.angle_weight * angle,
        }
