"""Pruned students (a student's `prune:`): cut from a trained model to a MAC or parameter budget
by Torch-Pruning, trained by the student's method, shipped like any other student; the pruned
widths are data in deploy.pt that rebuild the network through the safe loader."""

import copy
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_one_sentence, kdforge_cli, run_tiny, tiny_config
from kdforge.errors import UserError
from kdforge.export.onnx_export import export_onnx
from kdforge.export.strip import load_deployed, save_deployed
from kdforge.nn.widths import layer_widths, resize
from kdforge.profile.counts import count_costs
from kdforge.train.models import create_model
from kdforge.train.prune import budget_measure, prune_to_budget
from test_torchvision_counts import timm, torchvision_models  # noqa: F401 (fixtures)

STUDENTS = tiny_config("unused")["students"]
PRUNED = {**STUDENTS[1], "prune": {"from": "teacher", "budget": {"macs": 0.5}}}
MACS = budget_measure("macs", (1, 1, 8, 8))  # of a digits-sized input


def _macs(model: nn.Module, shape=(1, 1, 8, 8)) -> int:
    return int(count_costs(model, shape)["totals"]["macs"])


def test_a_pruned_student_reaches_its_budget_and_ships_like_any_other(tmp_path):
    out = run_tiny(tmp_path, [{**PRUNED, "deploy": ["int8"], "prune": {**PRUNED["prune"], "round_to": 1}}])  # a fine grid
    assert out.returncode == 0, out.stderr
    assert re.search(r"pruned from the teacher \(magnitude, one cut\) to 0\.(49|50|51)\d of its macs", out.stdout)
    folder = tmp_path / "run" / "students" / "kd"
    model, spec = load_deployed(folder / "deploy.pt")
    assert spec["widths"] and abs(_macs(model) / _macs(create_model("resnet8", 10, 1)) - 0.5) <= 0.02 * 0.5
    verify = json.loads((folder / "verify.json").read_text())
    assert all(v["passed"] for k, v in verify.items() if k in ("onnxruntime", "onnxruntime-int8"))
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert re.search(r"resnet8 pruned to 0\.(49|50|51) of its macs \(budget 0\.5\)", report)

    # strip rebuilds the cut from the distill stage's widths.json, which it checks as a stranger's file
    widths = folder / "widths.json"
    good = widths.read_text()
    for bad in ('{"stem.0": {"in_channels": 1, "out_channels": 4096, "groups": 1}}', "[1, 2"):
        widths.write_text(bad)
        out = kdforge_cli("run", tmp_path / "c.yaml", "--only", "strip", "--force")
        assert_one_sentence(out, "widths.json")  # what is wrong with it, named
    widths.write_text("{}")  # well-formed, but not the cut the checkpoint holds
    assert_one_sentence(kdforge_cli("run", tmp_path / "c.yaml", "--only", "strip", "--force"), "checkpoint")
    widths.write_text(good)

    # the budget's measure and share are the student's: parameters now, distillation reruns
    out = run_tiny(tmp_path, [{**PRUNED, "deploy": ["int8"], "prune": {"from": "teacher", "budget": {"params": 0.3}, "round_to": 1}}])
    assert out.returncode == 0, out.stderr
    assert "[distill/kd] up to date" not in out.stdout and "of its params (budget 0.3)" in out.stdout
    model, _ = load_deployed(folder / "deploy.pt")
    unpruned = sum(p.numel() for p in create_model("resnet8", 10, 1).parameters())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.3 * unpruned, rel=0.02)

    # or the estimated latency on a target, the report's own estimate
    out = run_tiny(tmp_path, [{**PRUNED, "prune": {"from": "teacher", "budget": {"latency": 0.8, "target": "orin"}, "round_to": 1}}])
    assert out.returncode == 0, out.stderr
    assert re.search(r"to 0\.(78|79|80|81)\d of its estimated latency on orin \(budget 0\.8\)", out.stdout)


def _trained_like_resnet8() -> nn.Module:
    """A ResNet-8 whose batch-norm scales rank channels opposite to their weights' norms."""
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.linspace(2.0, 0.1, m.num_features))
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.linspace(0.1, 2.0, m.out_channels).view(-1, 1, 1, 1))
    return model


def _kept_stem_channels(model: nn.Module, importance: str, keep=()) -> torch.Tensor:
    original = model.stem[0].weight.detach().flatten(1)
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    pruned = prune_to_budget(model, images, labels, MACS, 0.5, importance, [model.fc, *keep]).model
    kept = pruned.stem[0].weight.detach().flatten(1)
    return torch.tensor([int((original == row).all(1).nonzero()[0]) for row in kept])


def test_importance_decides_which_channels_go_and_keep_holds_a_layers_width():
    model = _trained_like_resnet8()
    by_magnitude, by_scale = _kept_stem_channels(model, "magnitude"), _kept_stem_channels(model, "bn_scale")
    assert len(by_magnitude) < 16 and by_magnitude.float().mean() > 7.5 > by_scale.float().mean()
    assert len(_kept_stem_channels(model, "taylor")) < 16
    assert len(_kept_stem_channels(model, "magnitude", keep=[model.stem[0]])) == 16


def test_a_deploy_file_rebuilds_the_pruned_widths_and_refuses_widths_that_do_not_fit(tmp_path):
    model = _trained_like_resnet8()
    pruned = prune_to_budget(model, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), MACS, 0.5, "magnitude", [model.fc]).model
    spec = {"model": "resnet8", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8}
    widths = layer_widths(pruned, create_model("resnet8", 10, 1))
    save_deployed(tmp_path / "deploy.pt", pruned, {**spec, "widths": widths})
    rebuilt, _ = load_deployed(tmp_path / "deploy.pt")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned.eval()(x))
    first = next(iter(widths))
    for bad in ({"nowhere": {"num_features": 3}}, {first: {**widths[first], "out_channels": 10 ** 9}},
                {first: {k: -1 for k in widths[first]}}, {first: "wide"}):
        save_deployed(tmp_path / "bad.pt", pruned, {**spec, "widths": {**widths, **bad}})
        with pytest.raises(UserError, match="widths"):
            load_deployed(tmp_path / "bad.pt")
    out = kdforge_cli("profile", tmp_path / "bad.pt")
    assert_one_sentence(out, "has widths that do not fit its model")


class Branches(nn.Module):
    """Blocks in an nn.ModuleDict called in a loop, each concatenating two branches."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.ModuleDict({name: nn.ModuleDict({"a": nn.Conv2d(32, 16, 3, padding=1), "b": nn.Conv2d(32, 16, 1),
                                                          "mix": nn.Conv2d(32, 32, 1)}) for name in ("one", "two")})
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks.values():
            x = torch.relu(block["mix"](torch.cat([block["a"](x), block["b"](x)], 1))) + x
        return self.head(x.mean((2, 3)))


def _prunes_and_rebuilds(model: nn.Module, classifier: nn.Module, shape, fresh: nn.Module, tmp_path) -> float:
    """The pruned model's MAC share; it rebuilds from its widths and its ONNX file computes as it does."""
    import onnxruntime as ort

    images = torch.randn(4, *shape)
    labels = torch.randint(0, classifier.out_features, (4,))
    pruned = prune_to_budget(model.eval(), images, labels, budget_measure("macs", (1, *shape)), 0.5, "magnitude", [classifier]).model
    rebuilt = resize(fresh, layer_widths(pruned, model))
    rebuilt.load_state_dict(pruned.state_dict())
    rebuilt.eval()
    path = export_onnx(rebuilt, images[:2], tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": images.numpy()})[0], pruned(images).numpy(), atol=1e-3, rtol=1e-3)
    return _macs(pruned, (1, *shape)) / _macs(model, (1, *shape))


def test_a_network_with_concatenations_in_a_module_dict_prunes(tmp_path):
    torch.manual_seed(0)
    model = Branches()
    assert 0.4 < _prunes_and_rebuilds(model, model.head, (1, 8, 8), copy.deepcopy(model), tmp_path) <= 0.51


@pytest.mark.slow  # 20-45 s each: the cut's search builds Torch-Pruning's graph of a large model some 30 times
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_prune_to_a_budget(torchvision_models, name, tmp_path):  # noqa: F811
    model = getattr(torchvision_models, name)(num_classes=10)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    fresh = getattr(torchvision_models, name)(num_classes=10)
    assert _prunes_and_rebuilds(model, classifier, (3, 64, 64), fresh, tmp_path) == pytest.approx(0.5, abs=0.02)


@pytest.mark.slow
def test_a_timm_model_with_squeeze_excite_and_depthwise_layers_prunes_to_a_budget(timm, tmp_path):
    model, fresh = (timm.create_model("mobilenetv3_small_100", num_classes=10) for _ in range(2))
    assert _prunes_and_rebuilds(model, model.classifier, (3, 32, 32), fresh, tmp_path) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("student,fragment", [
    ({**PRUNED, "model": "resnet20"}, "needs the teacher's model (resnet8) as its model"),
    ({**STUDENTS[2], "prune": {"from": "teacher", "budget": {"macs": 0.5}}}, "pruning cuts CNNs: name the CNN as its model"),
    ({**PRUNED, "prune": {"from": "teacher", "budget": {"macs": 0.5, "params": 0.5}}}, "names one measure"),
    ({**PRUNED, "prune": {"from": "teacher", "budget": {"latency": 0.5}}}, "a latency budget names its target"),
    ({**PRUNED, "prune": {"from": "teacher", "budget": {"latency": 0.5, "target": "h200x"}}}, "unknown target 'h200x'"),
    ({**PRUNED, "prune": {"from": "weights", "budget": {"macs": 0.5}}}, "names no weights file"),
    ({**PRUNED, "prune": {"from": "teacher", "budget": {"macs": 0.5}, "keep": ["stem.9"]}}, "prune.keep names 'stem.9'"),
    ({**PRUNED, "prune": {"from": "teacher", "budget": {"macs": 0.001}}}, "cannot be pruned to prune.budget.macs=0.001"),
])
def test_a_prune_setting_that_cannot_work_is_one_sentence(tmp_path, student, fragment):
    assert_one_sentence(run_tiny(tmp_path, [student]), fragment)


def test_round_to_keeps_pruned_channel_counts_multiples_of_it():
    model = _trained_like_resnet8()
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def widths(round_to: int) -> list[int]:
        pruned = prune_to_budget(model, images, labels, MACS, 0.5, "magnitude", [model.fc], round_to).model
        return [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]

    assert all(w % 8 == 0 for w in widths(8)) and any(w % 8 for w in widths(1))


def test_iterative_pruning_cuts_in_steps_with_recovery_training_between(tmp_path):
    prune = {"from": "teacher", "budget": {"macs": 0.5}, "steps": 2, "recovery_epochs": 2, "round_to": 1}
    out = run_tiny(tmp_path, [{**PRUNED, "prune": prune}])
    assert out.returncode == 0, out.stderr
    assert re.search(r"pruned from the teacher \(magnitude, 2 cuts\) to 0\.(49|50|51)\d of its macs", out.stdout)
    recovery = tmp_path / "run" / "students" / "kd" / "prune" / "step1" / "metrics.jsonl"
    assert {json.loads(line)["epoch"] for line in recovery.read_text().splitlines()} == {0, 1}  # recovery_epochs
    assert not (tmp_path / "run" / "students" / "kd" / "prune" / "step2").exists()  # the last cut trains as the student
    assert json.loads((tmp_path / "run" / "students" / "kd" / "verify.json").read_text())["onnxruntime"]["passed"]


def test_adder_and_binary_twins_are_cut_as_their_cnn_then_converted(tmp_path):
    from kdforge.nn.adder import AdderConv2d
    from kdforge.nn.binary import BinaryConv2d

    twins = [{**PRUNED, "name": family, "family": family} for family in ("adder", "binary")]
    out = run_tiny(tmp_path, twins)
    assert out.returncode == 0, out.stderr
    for family, layer in (("adder", AdderConv2d), ("binary", BinaryConv2d)):
        folder = tmp_path / "run" / "students" / family
        model, _ = load_deployed(folder / "deploy.pt")
        layers = [m for m in model.modules() if isinstance(m, layer)]
        unpruned = [m for m in create_model(f"resnet8_{family}", 10, 1).modules() if isinstance(m, layer)]
        assert len(layers) == len(unpruned) and sum(m.weight.numel() for m in layers) < sum(m.weight.numel() for m in unpruned)
        assert json.loads((folder / "verify.json").read_text())["onnxruntime"]["passed"]
