"""Every method: its losses against their formulas on hand-made tensors, one epoch of training,
and stripping that removes exactly what the method declared."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from kdforge.config import DataConfig, TrainConfig
from kdforge.export.strip import strip, training_parameters
from kdforge.nn.dirac import DiracConv2d
from kdforge.train.data import build_data
from kdforge.train.methods import list_methods, method_class
from kdforge.train.methods.at import attention_loss, attention_map
from kdforge.train.methods.jointrd import hybrid_weight
from kdforge.train.methods.rkd import normalised_distances, triplet_angles
from kdforge.train.methods.sp import similarity_loss
from kdforge.train.methods.tofd import orthogonality, soft_cross_entropy
from kdforge.train.models import create_model
from kdforge.train.trainer import fit

EXAMPLE = torch.zeros(2, 1, 8, 8)
STUDENT_METHODS = [m for m in list_methods() if m != "tofd_teacher"]
ADDERNET_METHODS = {"pkkd"}


def make(method: str, **options):
    torch.manual_seed(0)
    cls = method_class(method)
    teacher = create_model("resnet8", 10, 1) if cls.needs_teacher else None
    student = create_model("resnet8_adder" if method in ADDERNET_METHODS else "resnet8", 10, 1)
    return cls(student, teacher, cls.Options(**options), EXAMPLE)


def test_attention_map_and_loss_by_hand():
    f = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 0.0]]]])  # (1, 2, 2, 2)
    # mean over channels of f^2: [[1, 2], [0, 0]] -> normalised by sqrt(5)
    expected = torch.tensor([[1.0, 2.0, 0.0, 0.0]]) / math.sqrt(5)
    torch.testing.assert_close(attention_map(f), expected)
    g = torch.tensor([[[[0.0, 0.0], [0.0, 3.0]]]])
    # the mean over the batch and the 4 positions: the paper's beta is per attention element
    assert attention_loss(f, g).item() == pytest.approx(((expected - torch.tensor([[0, 0, 0, 1.0]])) ** 2).sum().item() / 4)


def test_similarity_loss_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # G_s = I; G_t = ones normalised by row: each row [1, 1] / sqrt(2)
    g_t = torch.full((2, 2), 1 / math.sqrt(2))
    assert similarity_loss(s, t).item() == pytest.approx(((g_t - torch.eye(2)) ** 2).sum().item() / 4)


def test_rkd_distance_and_angle_by_hand():
    e = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    d = normalised_distances(e)
    assert d[0, 1].item() == pytest.approx(3 / 4) and d[1, 2].item() == pytest.approx(5 / 4)  # mean distance 4
    angles = triplet_angles(e).view(3, 3, 3)  # angles[j, i, k] = cos of the angle at j between i and k
    assert angles[0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)  # right angle at the origin
    assert angles[1, 0, 2].item() == pytest.approx(3 / 5)


def test_tofd_terms_by_hand():
    assert orthogonality(torch.eye(3)).item() == pytest.approx(0.0)
    w = 2 * torch.eye(2)  # W W^T - I = 3 I: Frobenius norm 3 sqrt(2), twice
    assert orthogonality(w).item() == pytest.approx(2 * 3 * math.sqrt(2))
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    p_t = torch.softmax(t / 2, 1)
    assert soft_cross_entropy(s, t, 2.0).item() == pytest.approx(-(p_t * torch.log_softmax(s / 2, 1)).sum().item())


def test_jointrd_weight_decays_by_cosine_then_stays():
    assert hybrid_weight(0.0, 0.5, 0.3) == pytest.approx(1.0)
    assert hybrid_weight(0.15, 0.5, 0.3) == pytest.approx(0.75)
    assert hybrid_weight(0.3, 0.5, 0.3) == hybrid_weight(0.9, 0.5, 0.3) == 0.5


def test_dirac_conv_starts_near_identity_and_folds_exactly():
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    dirac = DiracConv2d(conv, alpha=1.0, beta=0.0)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(dirac(x), x)  # beta = 0: exactly the identity
    dirac = DiracConv2d(conv)
    torch.testing.assert_close(dirac.fold()(x), dirac(x))


def test_jointrd_student_is_plain_and_folds_to_the_same_outputs():
    distiller = make("jointrd").eval()
    x = torch.randn(3, 1, 8, 8)
    deployed = distiller.deployable().eval()
    torch.testing.assert_close(deployed(x), distiller.student(x))
    assert not any(isinstance(m, DiracConv2d) for m in deployed.modules())
    targets = {str(n.target) for n in torch.export.export(deployed, (x,)).graph.nodes if n.op == "call_function"}
    assert not {t for t in targets if "add" in t}  # no shortcut additions left
    no_decay = distiller.parameter_groups()[1]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 2 * 6  # alpha and beta of 6 stage convolutions


def test_fitnet_hint_is_the_regressed_second_stage():
    distiller = make("fitnet", hint_weight=1.0).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    _, losses = distiller(x, y, 0.0)
    s_mid = distiller.student.forward_stages(x)[1]
    t_mid = distiller.teacher.forward_stages(x)[1]
    torch.testing.assert_close(losses["hint"], nn.functional.mse_loss(distiller.regressor(s_mid), t_mid))


def test_dml_peer_starts_different_and_mutual_terms_vanish_when_equal():
    distiller = make("dml")
    assert not torch.equal(distiller.peer.fc.weight, distiller.student.fc.weight)
    distiller.peer.load_state_dict(distiller.student.state_dict())
    _, losses = distiller.eval()(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 0.0)
    assert losses["kl"].abs().item() < 1e-6 and losses["kl_peer"].abs().item() < 1e-6


def test_tofd_has_a_head_and_link_per_stage():
    distiller = make("tofd")
    assert len(distiller.heads.convs) == len(distiller.student.stages) - 1 == 2
    assert len(distiller.links) == 3 and distiller.teacher_method == "tofd_teacher"


DATA = build_data(DataConfig(), seed=0)
SMALL = type(DATA)(Subset(DATA.train, range(256)), Subset(DATA.val, range(64)), Subset(DATA.test, range(64)),
                   10, 1, 8, DATA.mean, DATA.std, DATA.class_names)


@pytest.mark.parametrize("method", STUDENT_METHODS)
def test_each_method_trains_one_epoch_and_strips_exactly_what_it_declared(method, tmp_path):
    distiller = make(method)
    result = fit(distiller, SMALL, TrainConfig(epochs=1, batch_size=64, lr=0.05), tmp_path / "c.pt", "fp", torch.device("cpu"), 0)
    assert math.isfinite(result.history[-1]["loss"])
    declared = distiller.training_only
    kept = {k for k in distiller.state_dict() if not k.startswith(tuple(f"{m}." for m in declared))}
    assert kept == {f"student.{k}" for k in distiller.student.state_dict()}
    deployed = strip(distiller, torch.randn(4, 1, 8, 8))
    assert training_parameters(distiller) >= sum(p.numel() for p in deployed.parameters())


def test_tofd_cifar_resnet18_strips_to_the_plain_network():
    cls = method_class("tofd")
    example = torch.zeros(2, 3, 32, 32)
    distiller = cls(create_model("cifar_resnet18", 100), create_model("cifar_resnet18", 100), cls.Options(), example)
    deployed = strip(distiller, torch.randn(2, 3, 32, 32))
    assert sum(p.numel() for p in deployed.parameters()) == 11_220_132
    assert training_parameters(distiller) > 11_220_132 + 3 * 100 * 512  # heads and links while training


def test_pkkd_kernels_match_their_formulas():
    from kdforge.train.methods.pkkd import gaussian_kernel, laplacian_kernel

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.randn(1, 2, 4, 4)
    y = conv(x)
    patches = nn.functional.unfold(x, 3, padding=1)[0].t()                    # (16, 18)
    filters = conv.weight.flatten(1)                                           # (3, 18)
    distance_sq = torch.cdist(patches, filters).pow(2).t().reshape(1, 3, 4, 4)
    torch.testing.assert_close(gaussian_kernel(conv, x, y, torch.tensor(2.0)), torch.exp(-distance_sq / 4), rtol=1e-4, atol=1e-5)
    y_ann = -torch.tensor([[[[1.0, 2.0]]]])
    torch.testing.assert_close(laplacian_kernel(y_ann, torch.tensor(2.0)), torch.exp(torch.tensor([[[[-0.5, -1.0]]]])))
    assert laplacian_kernel(y_ann).mean().item() == pytest.approx((math.exp(-1 / 1.5) + math.exp(-2 / 1.5)) / 2)  # sigma = mean distance


def test_pkkd_teacher_is_the_cnn_twin_and_only_the_addernet_ships():
    from kdforge.nn.adder import AdderConv2d

    cls = method_class("pkkd")
    torch.manual_seed(0)
    distiller = cls(create_model("resnet8_adder", 10, 1), None, cls.Options(), EXAMPLE)
    assert not any(isinstance(m, AdderConv2d) for m in distiller.teacher.modules())
    assert distiller.layers == ["stages.0.0.conv2", "stages.1.0.conv2", "stages.2.0.conv2"]
    _, losses = distiller.train()(torch.randn(8, 1, 8, 8), torch.arange(8), 0.0)
    assert set(losses) == {"ce", "ce_teacher", "kd", "kernel"} and all(torch.isfinite(v) for v in losses.values())
    deployed = strip(distiller, torch.randn(4, 1, 8, 8))
    assert deployed is distiller.student and not deployed._forward_hooks
    assert sum(isinstance(m, AdderConv2d) for m in deployed.modules()) == 8
    with pytest.raises(Exception, match="AdderNet students"):
        cls(create_model("resnet8", 10, 1), None, cls.Options(), EXAMPLE)


def test_at_positions_gives_every_map_size_the_same_weight():
    s, t = torch.randn(4, 3, 4, 4), torch.randn(4, 5, 4, 4)
    s2, t2 = (nn.functional.interpolate(m, scale_factor=4) for m in (s, t))  # 16x larger, same attention
    # The reference's mean over positions weighs the small map 16x more ...
    torch.testing.assert_close(attention_loss(s, t), 16 * attention_loss(s2, t2))
    # ... `positions` weighs both as a map of that many positions, and as the reference at that size.
    torch.testing.assert_close(attention_loss(s, t, positions=1024), attention_loss(s2, t2, positions=1024))
    torch.testing.assert_close(attention_loss(s2, t2, positions=256), attention_loss(s2, t2))
    x, y = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    assert make("at", positions=1024).eval()(x, y, 0.0)[1]["at"] < make("at").eval()(x, y, 0.0)[1]["at"]


def test_fitnet_hint_stage_outside_the_networks_is_one_sentence():
    from kdforge.errors import UserError

    with pytest.raises(UserError, match="hint stage 3 does not exist; student and teacher have 3 stages"):
        make("fitnet", stage=3)
    assert make("fitnet", stage=2).stage == 2
