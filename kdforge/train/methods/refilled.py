"""REFILLED, relationship matching across tasks (Ye, Lu, Zhan, TPAMI; code njulus/REFILLED).

The teacher may classify other classes than the student: only relations between instances pass.

Stage 1 (the first `stage1_fraction` of training), embedding distillation by comparison
matching. Embeddings are L2-normalised. Every anchor of the batch forms a tuple with one
neighbour of its class and K impostors, mined semi-hard in the student's embedding
(d(a, n) - d(a, p) in (0, margin]); K is the smallest number any tuple has (tuples with none are
left out; if no tuple has one, each anchor takes its nearest impostor). Teacher and student each
give a softmax over the tuple's negated distances / tau; the loss is weight * KL(teacher || student)
averaged over tuples. With one impostor this is rho * Diff + log(1 + exp(-Diff)) up to a
constant, Diff = (D(a, n) - D(a, p)) / tau and rho = 1 - p_teacher (the paper's supplement).
Only the embedding learns in stage 1, as in the public code.

Stage 2, local classifier distillation. The teacher's class centres are the normalised mean
teacher embeddings of the student classes present in the batch (the labels are the student's:
the teacher never needs its own); the teacher's logits are each instance's cosine similarity to
those centres. The student gets CE + lambda * mean_i lambda_i * KL(teacher_i || student_i), the
student's logits restricted to the classes in the batch, both at temperature tau2, and lambda_i
the teacher's confidence (its largest local probability, in (0, 1]) so that an unsure teacher
counts less. The paper leaves the scale of the teacher's logits open: cosine similarities lie in
[-1, 1], which makes the teacher's local distribution nearly flat and pulls the student's logits
flat, so they are multiplied by `scale` = 10, as cosine classifiers usually are. Departures from
the public code, which follows neither detail of the paper: it
compares the student's embedding with global centres and weighs all instances equally; here the
paper's per-batch centres, teacher embeddings and adaptive weights are used. The public code
also gives the backbone 0.1x the classifier's learning rate in stage 2; here one schedule
serves both stages.
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from kdforge.train.methods.base import Distiller, NoOptions, features_and_logits
from kdforge.train.methods.registry import register_method


def mine_tuples(embedding: torch.Tensor, labels: torch.Tensor, margin: float, max_impostors: int):
    """(anchor, neighbour, impostors (T, K)) indices of semi-hard tuples in a batch."""
    with torch.no_grad():
        d = torch.cdist(embedding, embedding)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        has_neighbour = (same & ~eye).any(1)
        anchors = torch.nonzero(has_neighbour).flatten()
        if len(anchors) == 0:
            return None
        # one neighbour per anchor: its first other sample of the class
        neighbours = torch.stack([torch.nonzero(same[a] & ~eye[a]).flatten()[0] for a in anchors])
        d_ap = d[anchors, neighbours].unsqueeze(1)
        d_an = d[anchors]
        impostor = ~same[anchors]
        semi_hard = impostor & (d_an > d_ap) & (d_an <= d_ap + margin)
        counts = semi_hard.sum(1)
        keep = counts > 0
        if keep.any():
            k = int(min(counts[keep].min().item(), max_impostors))
            anchors, neighbours, d_an, pool = anchors[keep], neighbours[keep], d_an[keep], semi_hard[keep]
        else:
            if not impostor.any(1).all():
                return None
            k, pool = 1, impostor
        ranked = torch.where(pool, d_an, torch.full_like(d_an, float("inf")))
        impostors = ranked.topk(k, dim=1, largest=False).indices
        return anchors, neighbours, impostors


def tuple_log_probs(embedding, anchors, neighbours, impostors, tau: float) -> torch.Tensor:
    """log softmax over (-d(a, p), -d(a, n_1), ..., -d(a, n_K)) / tau, for every tuple."""
    a = embedding[anchors].unsqueeze(1)
    others = torch.cat([embedding[neighbours].unsqueeze(1), embedding[impostors]], dim=1)
    return F.log_softmax(-(a - others).norm(dim=2) / tau, dim=1)


def comparison_matching_loss(student_embedding, teacher_embedding, anchors, neighbours, impostors, tau: float):
    log_s = tuple_log_probs(student_embedding, anchors, neighbours, impostors, tau)
    log_t = tuple_log_probs(teacher_embedding, anchors, neighbours, impostors, tau)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


def local_classifier_loss(student_logits, teacher_embedding, labels, tau: float, scale: float = 1.0):
    """Confidence-weighted KL from the teacher's local (batch-class-centre) classifier to the student's."""
    present = torch.unique(labels)
    centres = torch.stack([F.normalize(teacher_embedding[labels == c].mean(0), dim=0) for c in present])
    teacher_logits = scale * (teacher_embedding @ centres.t())
    p_t = F.softmax(teacher_logits / tau, dim=1)
    weights = p_t.max(1).values
    log_s = F.log_softmax(student_logits[:, present] / tau, dim=1)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_s)).sum(1)
    return (weights * kl).mean()


class REFILLEDOptions(NoOptions):
    stage1_fraction: float = Field(0.5, ge=0, lt=1, description="share of training spent on embedding distillation")
    tau1: float = Field(4.0, gt=0, description="temperature of comparison matching")
    weight1: float = Field(1000.0, ge=0, description="weight of the comparison-matching KL (public code: 1000)")
    margin: float = Field(0.2, ge=0, description="semi-hard margin of the impostor miner")
    max_impostors: int = Field(8, ge=1)
    tau2: float = Field(1.0, gt=0, description="temperature of local classifier distillation")
    scale: float = Field(10.0, gt=0, description="the teacher's cosine similarities are multiplied by this into logits")
    lambd: float = Field(2.0, ge=0, description="weight of local classifier distillation")


@register_method("refilled")
class REFILLED(Distiller):
    Options = REFILLEDOptions

    def forward(self, images, labels, progress):
        _, embedding, logits = features_and_logits(self.student, images)
        with torch.no_grad():
            teacher_embedding = F.normalize(self.teacher.embed(self.teacher.forward_stages(images)[-1]), dim=1)
        o = self.options
        if progress < o.stage1_fraction:
            student_embedding = F.normalize(embedding, dim=1)
            tuples = mine_tuples(student_embedding.detach(), labels, o.margin, o.max_impostors)
            if tuples is None:
                return logits, {"comparison": embedding.sum() * 0.0}
            return logits, {"comparison": o.weight1 * comparison_matching_loss(student_embedding, teacher_embedding, *tuples, o.tau1)}
        return logits, {
            "ce": F.cross_entropy(logits, labels),
            "local_kd": o.lambd * local_classifier_loss(logits, teacher_embedding, labels, o.tau2, o.scale),
        }
