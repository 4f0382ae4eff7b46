"""CE: the student trained on labels alone, the baseline every method is compared with."""

import torch.nn.functional as F

from kdforge.train.methods.base import Distiller
from kdforge.train.methods.registry import register_method


@register_method("ce")
class CrossEntropy(Distiller):
    needs_teacher = False
    training_only = ()
    baseline = True

    def forward(self, images, labels, progress):
        logits = self.student(images)
        return logits, {"ce": F.cross_entropy(logits, labels)}
