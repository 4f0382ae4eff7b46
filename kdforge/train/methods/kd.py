"""KD (Hinton et al., 2015): cross-entropy on labels plus KL to the teacher's softened outputs.

loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)); the T^2 factor
keeps the soft term's gradients on the scale of the hard one. Defaults T = 4, alpha = 0.9 as in
the JointRD paper's comparison.
"""

import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions
from kdforge.train.methods.registry import register_method


def kd_loss(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


class KDOptions(NoOptions):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)


@register_method("kd")
class KnowledgeDistillation(Distiller):
    Options = KDOptions

    def forward(self, images, labels, progress):
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images)
        a = self.options.alpha
        return logits, {
            "ce": (1 - a) * F.cross_entropy(logits, labels),
            "kd": a * kd_loss(logits, teacher_logits, self.options.temperature),
        }
