"""REFILLED's losses against the paper's formulas, and the cross-task data they need."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.config import DataConfig
from kdforge.errors import UserError
from kdforge.train.data import build_data
from kdforge.train.evaluation import generalized_accuracy
from kdforge.train.methods.refilled import comparison_matching_loss, local_classifier_loss, mine_tuples


def test_one_impostor_kl_equals_the_supplements_identity():
    """KL(p_T || p_S) = rho * Diff + log(1 + exp(-Diff)) + const, Diff = (D(a,n) - D(a,p)) / tau, rho = 1 - p_T."""
    torch.manual_seed(0)
    tau = 2.0
    teacher = F.normalize(torch.randn(3, 5), dim=1)
    anchors, neighbours, impostors = torch.tensor([0]), torch.tensor([1]), torch.tensor([[2]])
    t_diff = ((teacher[0] - teacher[2]).norm() - (teacher[0] - teacher[1]).norm()) / tau
    p_t = torch.sigmoid(t_diff)  # the teacher's probability that the neighbour is the closer one
    constant = None
    for _ in range(5):  # the identity holds for every student, with one teacher-only constant
        student = F.normalize(torch.randn(3, 5), dim=1)
        kl = comparison_matching_loss(student, teacher, anchors, neighbours, impostors, tau)
        diff = ((student[0] - student[2]).norm() - (student[0] - student[1]).norm()) / tau
        rest = kl - ((1 - p_t) * diff + torch.log1p(torch.exp(-diff)))
        constant = rest if constant is None else constant
        assert rest.item() == pytest.approx(constant.item(), abs=1e-5)
    assert constant.item() == pytest.approx((p_t * torch.log(p_t) + (1 - p_t) * torch.log(1 - p_t)).item(), abs=1e-5)


def test_k_impostors_match_the_direct_formula():
    torch.manual_seed(1)
    tau = 4.0
    s, t = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    anchors, neighbours, impostors = torch.tensor([0, 3]), torch.tensor([1, 4]), torch.tensor([[2, 5], [0, 2]])

    def probs(e, a, p, ns):
        d = [(e[a] - e[p]).norm()] + [(e[a] - e[n]).norm() for n in ns]
        z = [math.exp(-x.item() / tau) for x in d]
        return [v / sum(z) for v in z]

    expected = 0.0
    for a, p, ns in zip(anchors.tolist(), neighbours.tolist(), impostors.tolist()):
        pt, ps = probs(t, a, p, ns), probs(s, a, p, ns)
        expected += sum(x * math.log(x / y) for x, y in zip(pt, ps))
    got = comparison_matching_loss(s, t, anchors, neighbours, impostors, tau).item()
    assert got == pytest.approx(expected / 2, abs=1e-6)


def test_mining_finds_semi_hard_impostors_and_a_common_k():
    e = torch.tensor([[0.0], [0.1], [0.15], [0.2], [1.0], [1.05]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    anchors, neighbours, impostors = mine_tuples(e, labels, margin=0.2, max_impostors=8)
    assert neighbours.tolist()[0] == 1 and impostors.shape[1] >= 1
    for a, p, ns in zip(anchors.tolist(), neighbours.tolist(), impostors.tolist()):
        d_ap = abs(e[a] - e[p]).item()
        for n in ns:
            assert labels[n] != labels[a] and d_ap < abs(e[a] - e[n]).item() <= d_ap + 0.2 + 1e-6


def test_local_classifier_loss_is_weighted_by_teacher_confidence():
    teacher = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), dim=1)
    labels = torch.tensor([0, 2, 0])  # classes 0 and 2 present; class 1 absent
    student_logits = torch.zeros(3, 3, requires_grad=True)
    loss = local_classifier_loss(student_logits, teacher, labels, tau=1.0)
    centres = torch.stack([F.normalize(teacher[[0, 2]].mean(0), dim=0), teacher[1]])
    p_t = F.softmax(teacher @ centres.t(), dim=1)
    kl = (p_t * torch.log(p_t / 0.5)).sum(1)  # the student is uniform over the 2 present classes
    assert loss.item() == pytest.approx((p_t.max(1).values * kl).mean().item(), abs=1e-6)
    loss.backward()
    assert student_logits.grad[:, 1].abs().sum() == 0  # classes not in the batch get no signal


def test_cross_task_split_by_lists_and_by_overlap():
    cfg = DataConfig(teacher_classes=[0, 1, 2, 3, 4, 5], student_classes=[3, 4, 5, 6, 7, 8, 9])
    teacher, student = build_data(cfg, 0, "teacher"), build_data(cfg, 0, "student")
    assert teacher.num_classes == 6 and student.num_classes == 7 and student.classes == [3, 4, 5, 6, 7, 8, 9]
    assert set(student.train.labels.tolist()) == set(range(7)) and student.class_names[0] == "3"
    for overlap, shared in ((0.0, 0), (0.5, 2), (1.0, 4)):
        cfg = DataConfig(overlap=overlap, task_classes=4)
        t, s = build_data(cfg, 3, "teacher").classes, build_data(cfg, 3, "student").classes
        assert len(t) == len(s) == 4 and len(set(t) & set(s)) == shared
        assert build_data(cfg, 3, "student").classes == s  # deterministic
    with pytest.raises(UserError, match="needs 16 classes; the data set has 10"):
        build_data(DataConfig(overlap=0.0, task_classes=8), 0)
    with pytest.raises(UserError, match="class 12 does not exist"):
        build_data(DataConfig(student_classes=[1, 12]), 0)


def test_generalized_accuracy_is_the_harmonic_mean_of_old_and_new():
    logits = torch.eye(4)[[0, 1, 2, 0]]  # predictions 0, 1, 2, 0
    labels = torch.tensor([0, 1, 2, 3])
    result = generalized_accuracy(logits, labels, old_classes=[0, 1])
    assert (result["accuracy_old"], result["accuracy_new"]) == (1.0, 0.5)
    assert result["harmonic_mean"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
