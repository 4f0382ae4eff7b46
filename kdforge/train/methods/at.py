"""AT, attention transfer (Zagoruyko & Komodakis, ICLR 2017).

The attention map of a feature map is the channel mean of |F|^p (p = 2), flattened and
L2-normalised; the loss is beta/2 * sum over stage pairs of ||a_s - a_t||_2^2, with the
paper's beta = 1000 divided by the number of attention elements (batch x H x W), i.e. beta/2
times the mean squared difference, added to cross-entropy. All stage outputs are
matched; the larger map is pooled when resolutions differ.
"""

import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.fitnet import match_spatial
from kdforge.train.methods.registry import register_method


def attention_map(feature_map, p: float = 2.0):
    return F.normalize(feature_map.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student_map, teacher_map, p: float = 2.0):
    s, t = match_spatial(student_map, teacher_map)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


class ATOptions(NoOptions):
    beta: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)


@register_method("at")
class AttentionTransfer(Distiller):
    Options = ATOptions

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            teacher_feats = self.teacher.forward_stages(images)
        at = sum(attention_loss(s, t, self.options.p) for s, t in zip(feats, teacher_feats))
        return logits, {"ce": F.cross_entropy(logits, labels), "at": self.options.beta / 2 * at}
