import pytest
import torch

from kdforge.errors import UserError
from kdforge.train.models import StagedNet, create_model, list_models

PUBLISHED_PARAMS = [
    ("imagenet_resnet18", 1000, 11_689_512),
    ("imagenet_resnet50", 1000, 25_557_032),
    ("cifar_resnet18", 100, 11_220_132),
]


@pytest.mark.parametrize("name,classes,params", PUBLISHED_PARAMS)
def test_parameter_counts_match_published(name, classes, params):
    assert sum(p.numel() for p in create_model(name, classes).parameters()) == params


@pytest.mark.parametrize("name,classes,millions", [("resnet20", 10, 0.27), ("wrn_40_2", 100, 2.26), ("resnet56", 10, 0.86)])
def test_parameter_counts_near_published(name, classes, millions):
    params = sum(p.numel() for p in create_model(name, classes).parameters())
    assert params / 1e6 == pytest.approx(millions, abs=0.01)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("imagenet") and n not in ("resnet110", "wrn_28_10")])
def test_every_model_is_a_staged_net_shaped_by_the_data(name):
    model = create_model(name, num_classes=7, in_channels=1).eval()
    assert isinstance(model, StagedNet)
    x = torch.randn(2, 1, 16, 16)
    feats = model.forward_stages(x)
    assert len(feats) == len(model.stages)
    assert model(x).shape == (2, 7)
    assert torch.allclose(model.fc(model.embed(feats[-1])), model(x))


def test_forward_stages_can_start_mid_network():
    model = create_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 16, 16)
    feats = model.forward_stages(x)
    assert torch.allclose(model.forward_stages(feats[0], start=1)[-1], feats[-1])


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'resnet21'"):
        create_model("resnet21", 10)
