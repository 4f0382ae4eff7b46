import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from kdforge.profile.counts import count_costs
from kdforge.train.models import create_model


def _fvcore_macs(model, shape) -> int:
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(shape))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    return by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0)


@pytest.mark.parametrize("name,shape", [("resnet20", (1, 3, 32, 32)), ("mobilenetv2", (1, 3, 32, 32)),
                                        ("wrn_16_2", (1, 3, 32, 32)), ("vgg_small", (1, 1, 8, 8))])
def test_macs_equal_fvcore(name, shape):
    model = create_model(name, 10, shape[1])
    totals = count_costs(model, shape)["totals"]
    assert totals["macs"] == _fvcore_macs(model, shape)
    assert totals["mul"] == totals["add"] == totals["macs"]
    assert totals["params"] == sum(p.numel() for p in model.parameters())


def test_imagenet_resnet18_totals_are_pinned():
    totals = count_costs(create_model("imagenet_resnet18", 1000), (1, 3, 224, 224))["totals"]
    assert totals["macs"] == 1_814_073_344  # the "1.8G" of the papers
    assert totals["param_bytes"] == 11_689_512 * 4


def test_hand_counted_network():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    costs = count_costs(model, (1, 2, 5, 5))
    t = costs["totals"]
    assert t["macs"] == 4 * 5 * 5 * (2 * 9) + 3 * 100
    assert t["norm_elements"] == 100
    assert [c["kind"] for c in costs["layers"]] == ["conv", "norm", "elementwise", "linear"]
    # an op's input and output live together: input(50) + conv(100), then conv(100) + bn(100), ...
    assert t["peak_activation_bytes"] == 200 * 4


def test_identity_shortcut_keeps_its_input_alive():
    class Residual(nn.Module):
        def __init__(self, shortcut: bool):
            super().__init__()
            self.a, self.b, self.shortcut = nn.ReLU(), nn.Sigmoid(), shortcut

        def forward(self, x):
            y = self.b(self.a(x))
            return y + x if self.shortcut else y * 2

    with_shortcut = count_costs(Residual(True), (1, 100))["totals"]["peak_activation_bytes"]
    plain = count_costs(Residual(False), (1, 100))["totals"]["peak_activation_bytes"]
    assert with_shortcut == 3 * 400  # x, relu(x), sigmoid: x must live until the addition
    assert plain == 2 * 400


def test_imagenet_resnet18_cnn_addernet_and_binary_totals_are_pinned():
    """The PKKD paper quotes about 1.8G mul / 1.8G add (CNN), 0.1G mul / 3.5G add (ANN) and
    0.1G mul / 1.8G add / 1.7G XNOR (BNN)."""
    stem = 3 * 7 * 7 * 64 * 112 * 112  # the first convolution stays multiplicative
    fc = 512 * 1000
    macs = 1_814_073_344
    cnn = count_costs(create_model("imagenet_resnet18", 1000), (1, 3, 224, 224))["totals"]
    ann = count_costs(create_model("imagenet_resnet18_adder", 1000), (1, 3, 224, 224))["totals"]
    assert (cnn["mul"], cnn["add"]) == (macs, macs)
    assert ann["macs"] == macs
    assert ann["mul"] == stem + fc == 118_525_952
    assert ann["add"] == 2 * (macs - stem - fc) + stem + fc == 3_509_620_736
    bnn = count_costs(create_model("imagenet_resnet18_binary", 1000), (1, 3, 224, 224))["totals"]
    assert bnn["macs"] == macs and bnn["mul"] == stem + fc == 118_525_952
    assert bnn["xnor"] == macs - stem - fc == 1_695_547_392
    assert bnn["add"] == macs == 1_814_073_344  # a popcount-add per binary MAC, an add per multiply-accumulate


def test_energy_estimate_uses_horowitz_45nm():
    from kdforge.profile.energy import energy_estimate

    e = energy_estimate(mul=1_000_000, add=2_000_000)
    assert e["fp32"] == pytest.approx((2e6 * 0.9 + 1e6 * 3.7) * 1e-6)
    assert e["int8"] == pytest.approx((2e6 * 0.03 + 1e6 * 0.2) * 1e-6)


def test_adder_macs_equal_fvcore_with_an_adder_handle():
    from math import prod

    model = create_model("resnet20_adder", 10).eval()

    def adder_handle(inputs, outputs):  # fvcore sees the op as one jit node: MACs = output elements x (C kh kw)
        weight_shape = inputs[1].type().sizes()
        return prod(outputs[0].type().sizes()) * prod(weight_shape[1:])

    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32)).set_op_handle("kdforge::adder_conv2d", adder_handle)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    ours = count_costs(model, (1, 3, 32, 32))
    adder_macs = sum(c["macs"] for c in ours["layers"] if c["kind"] == "adder")
    assert by_op["adder_conv2d"] == adder_macs
    assert ours["totals"]["macs"] == by_op["adder_conv2d"] + by_op["conv"] + by_op["linear"]


def test_plain_student_needs_less_activation_memory_than_its_residual_twin():
    from kdforge.train.models.plain import remove_shortcuts

    residual = count_costs(create_model("resnet20", 10), (1, 3, 32, 32))["totals"]["peak_activation_bytes"]
    plain = count_costs(remove_shortcuts(create_model("resnet20", 10)), (1, 3, 32, 32))["totals"]["peak_activation_bytes"]
    assert plain < residual


def test_pareto_front_keeps_the_points_nothing_beats():
    from kdforge.profile.plots import pareto_front

    #            fast+bad   slow+good  dominated  fastest+worst
    points = [(1.0, 90.0), (3.0, 99.0), (3.5, 95.0), (0.5, 80.0)]
    assert pareto_front(points) == [3, 0, 1]
