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
