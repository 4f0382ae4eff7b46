"""AT, attention transfer (Zagoruyko & Komodakis, ICLR 2017).

The attention map of a feature map is the channel mean of |F|^p (p = 2), flattened and
L2-normalised. Each pair of stage outputs adds the mean over batch and positions of the squared
difference of the two maps, and the sum is weighted by beta = 1000 and added to cross-entropy:
the authors' code (attention-transfer's `opt.beta * sum(at_loss(...))`), RepDistiller's and
mdistiller's, so kdforge's AT can be read beside their tables. The paper writes beta/2 with
beta = 1000 "divided by the number of elements in the attention map and batch size"; its code
uses beta, not beta/2, and so does kdforge. All stage outputs are matched; where their
resolutions differ the larger map is pooled (the references require equal sizes). Where the two
networks differ in stage count (models kdforge did not define), the last min(S, T) stages pair,
deepest with deepest (kdforge's rule; the paper pairs networks of equal stage counts).

Map sizes: the mean over positions divides each pair's squared distance (which lies in [0, 4]
whatever the size, the maps being unit vectors) by H*W, so a pair's weight is beta/(H*W) and
grows as maps shrink: 1 on CIFAR's 32x32 maps, 16 on 8x8, 250 on digits' 2x2. `positions: N`
divides every pair by N instead of its own H*W, giving every map, whatever its size, the weight
the reference gives a map of N positions (`positions: 1024`, the 32x32 map the authors tuned
beta on); the default (`positions` unset) is the reference.
"""

from typing import Optional

import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.fitnet import match_spatial
from kdforge.train.methods.registry import register_method


def attention_map(feature_map, p: float = 2.0):
    return F.normalize(feature_map.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student_map, teacher_map, p: float = 2.0, positions: Optional[int] = None):
    """The mean squared difference of the two attention maps over batch and positions, or,
    with `positions`, their squared distance averaged over the batch and divided by it."""
    s, t = match_spatial(student_map, teacher_map)
    squared = (attention_map(s, p) - attention_map(t, p)).pow(2)
    return squared.mean() if positions is None else squared.sum(1).mean() / positions


class ATOptions(NoOptions):
    beta: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)
    positions: Optional[int] = Field(
        None, gt=0, description="divide every map pair by this many positions instead of its own H*W (the reference)")


@register_method("at")
class AttentionTransfer(Distiller):
    Options = ATOptions

    def forward(self, images, labels, progress):
        feats, _, logits = features_and_logits(self.student, images)
        with self.no_teacher_grad():
            teacher_feats = self.teacher.forward_stages(images)
        o = self.options
        pairs = min(len(feats), len(teacher_feats))
        at = sum(attention_loss(s, t, o.p, o.positions) for s, t in zip(feats[-pairs:], teacher_feats[-pairs:]))
        return logits, {"ce": F.cross_entropy(logits, labels), "at": o.beta * at}
