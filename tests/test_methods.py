import math

import torch
import torch.nn.functional as F

from kdforge.train.methods import list_methods, method_class
from kdforge.train.methods.kd import kd_loss
from kdforge.train.models import create_model


def test_kd_loss_matches_hand_computed_kl():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    T = 2.0
    p_t = [math.exp(v / T) for v in t[0].tolist()]
    p_t = [v / sum(p_t) for v in p_t]
    p_s = [math.exp(v / T) for v in s[0].tolist()]
    p_s = [v / sum(p_s) for v in p_s]
    expected = T**2 * sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    assert abs(kd_loss(s, t, T).item() - expected) < 1e-6


def test_kd_loss_is_zero_when_student_equals_teacher():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 4.0).abs().item() < 1e-6


def test_kd_weights_hard_and_soft_terms():
    torch.manual_seed(0)
    cls = method_class("kd")
    student, teacher = create_model("resnet8", 10, 1), create_model("resnet8", 10, 1)
    distiller = cls(student, teacher, cls.Options(temperature=3.0, alpha=0.25)).train()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    logits, losses = distiller(x, y, progress=0.0)
    assert torch.allclose(losses["ce"], 0.75 * F.cross_entropy(logits, y))
    assert torch.allclose(losses["kd"], 0.25 * kd_loss(logits, teacher.eval()(x), 3.0), atol=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not distiller.teacher.training  # a frozen teacher stays in eval mode


def test_registry_lists_baselines():
    assert {"ce", "kd"} <= set(list_methods())
