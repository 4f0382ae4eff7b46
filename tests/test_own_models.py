"""Models kdforge did not define (tests/own_models.py, torchvision's definitions where its wheel is
here) as teachers and students: named by factory, started from a weights file as torchvision, timm
or the user's own training wrote it, their stages found or named, converted to AdderNet or
binary twins, and carried through strip, export, INT8 and verify like registered models."""

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import own_models
from conftest import tiny_config
from test_hostile_inputs import assert_refused, kdforge
from test_torchvision_counts import torchvision_models  # noqa: F401  (a fixture)
from kdforge.errors import UserError
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.binary import BinaryConv2d
from kdforge.train.models.build import build_network
from kdforge.train.models.foreign import ForeignNet, discover

TRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.05}


def _section(**keys):
    from kdforge.config import ModelSection

    return ModelSection(**{"model": "own_models:tiny", **keys})


def test_stages_and_classifier_are_found_from_one_forward_pass():
    assert discover(own_models.tiny(), torch.zeros(2, 1, 8, 8), "tiny") == (["body.3", "body.4", "body.5"], "head")
    # no blocks: the last layer before the downsampling and the last feature map larger than 1x1
    assert discover(own_models.depthwise(), torch.zeros(2, 1, 8, 8), "depthwise") == (["8", "11"], "14")


def test_a_foreign_net_reads_the_users_features_and_keeps_its_names():
    torch.manual_seed(0)
    net = own_models.tiny().eval()
    model = ForeignNet(net, ["body.3", "body.4", "body.5"], "head", "tiny")
    x = torch.randn(3, 1, 8, 8)
    feats = model.forward_stages(x)
    assert [tuple(f.shape) for f in feats] == [(3, 16, 8, 8), (3, 32, 4, 4), (3, 64, 2, 2)]
    torch.testing.assert_close(feats[1], net.body[:5](x))
    embedding = model.embed(feats[-1])
    torch.testing.assert_close(embedding, torch.flatten(net.pool(feats[-1]), 1))
    torch.testing.assert_close(model.fc(embedding), net(x))
    assert list(model.state_dict()) == [f"net.{k}" for k in net.state_dict()]
    with pytest.raises(UserError, match="middle stage"):
        model.forward_stages(x, start=1)


@pytest.mark.parametrize("writer", ["pth", "wrapped-pth", "safetensors"])
def test_weights_as_other_tools_write_them_load_by_the_users_names(tmp_path, writer):
    torch.manual_seed(1)
    trained = own_models.tiny(width=8)
    path = tmp_path / f"w.{'safetensors' if writer == 'safetensors' else 'pth'}"
    if writer == "safetensors":
        save_file(trained.state_dict(), path)
    else:
        torch.save({"state_dict": trained.state_dict(), "epoch": 90} if writer == "wrapped-pth" else trained.state_dict(), path)
    model, notes = build_network(_section(model_args={"width": 8}, weights=path), 10, 1, 8)
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(model.net.state_dict()[name], value)
    assert f"weights from {path}" in notes


def test_a_classifier_of_another_class_count_is_replaced_and_said(tmp_path):
    torch.save(own_models.tiny(num_classes=1000).state_dict(), tmp_path / "imagenet.pth")
    model, notes = build_network(_section(weights=tmp_path / "imagenet.pth"), 7, 1, 8)
    assert model.fc.out_features == 7 and "classifier head replaced: 1000 -> 7 classes (fine-tuning)" in notes


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = own_models.tiny().state_dict()
    state["body.9.weight"] = state.pop("body.0.weight")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"missing body\.0\.weight \(1\); unexpected body\.9\.weight \(1\)"):
        build_network(_section(weights=tmp_path / "w.pt"), 10, 1, 8)
    torch.save(own_models.tiny(width=8).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(UserError, match=r"of another shape body\.0\.weight \(8, 1, 3, 3\) vs \(16, 1, 3, 3\)"):
        build_network(_section(weights=tmp_path / "narrow.pt"), 10, 1, 8)


def test_named_stages_and_classifier_are_checked():
    model, notes = build_network(_section(stages=["body.4", "body.5"], classifier="head"), 10, 1, 8)
    assert model.net_stages == ["body.4", "body.5"] and notes == []
    with pytest.raises(UserError, match="stage 'body.7' is not a module"):
        build_network(_section(stages=["body.7"], classifier="head"), 10, 1, 8)
    with pytest.raises(UserError, match="classifier 'pool' .* is a AdaptiveAvgPool2d"):
        build_network(_section(stages=["body.5"], classifier="pool"), 10, 1, 8)


def test_family_conversion_of_any_cnn_keeps_the_first_and_what_the_adder_node_cannot_take():
    tiny, notes = build_network(_section(family="adder"), 10, 1, 8)
    adders = [n for n, m in tiny.net.named_modules() if isinstance(m, AdderConv2d)]
    assert len(adders) == 8 and isinstance(tiny.net.body[0], nn.Conv2d) and "the first (body.0) kept" in notes[-1]
    separable, notes = build_network(_section(model="own_models:depthwise", family="adder"), 10, 1, 8)
    kinds = [type(m).__name__ for m in separable.net if isinstance(m, (nn.Conv2d, AdderConv2d))]
    assert kinds == ["Conv2d", "Conv2d", "Conv2d", "AdderConv2d"]  # first; depthwise and biased kept; the last converted
    assert "kept as convolutions (grouped, dilated, biased or non-square): 3, 6" in notes
    binary, _ = build_network(_section(model="own_models:depthwise", family="binary"), 10, 1, 8)
    assert [type(m).__name__ for m in binary.net if isinstance(m, nn.Conv2d)] == ["Conv2d"] + ["BinaryConv2d"] * 3
    assert all(isinstance(m, BinaryConv2d) for m in list(binary.net)[3:] if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("change,fragment", [
    (lambda raw: raw["teacher"].update(model="resnet8", stages=["stages.0"]), "stages and classifier name the modules"),
    (lambda raw: raw["teacher"].update(train={"epochs": 0}), "needs its weights"),
    (lambda raw: raw["students"][0].update(train={"epochs": 0}), "1 epoch or more"),
    (lambda raw: raw["students"][0].update(model="own_models:tiny", family="adder", deploy=["fp16"]), "cannot deploy onnxruntime-fp16"),
    (lambda raw: raw["students"][0].update(model=".own:tiny"), "neither a registered model nor a factory"),
    (lambda raw: raw["students"][0].update(model="own_models:nothing"), "cannot import it (AttributeError"),
])
def test_config_mistakes_about_own_models(tmp_path, capsys, change, fragment):
    raw = tiny_config(tmp_path / "run")
    change(raw)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert_refused(kdforge(capsys, "run", tmp_path / "c.yaml", "--only", "data", "--only", "teacher", "--only", "distill"),
                   fragment)


def test_jointrd_on_a_model_kdforge_did_not_define_is_one_sentence(tmp_path, capsys):
    raw = tiny_config(tmp_path / "run")
    raw["students"] = [{"name": "j", "method": "jointrd", "model": "own_models:tiny", "train": TRAIN}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert_refused(kdforge(capsys, "run", tmp_path / "c.yaml"), "a plain student needs a ResNet")


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """The issue's run: a teacher given only as a weights file, never trained here; KD, FitNet and AT
    students of the user's architecture; a PKKD AdderNet converted from it and shipped as INT8; a
    student fine-tuned from weights with 1000 classes."""
    from kdforge.cli import main

    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    save_file(own_models.tiny(width=32).state_dict(), root / "teacher.safetensors")
    torch.save(own_models.tiny(num_classes=1000).state_dict(), root / "imagenet_like.pth")
    raw = tiny_config(root / "run")
    raw["teacher"] = {"model": "own_models:tiny", "model_args": {"width": 32}, "weights": str(root / "teacher.safetensors"),
                      "train": {"epochs": 0}}
    raw["students"] = [
        *({"name": m, "method": m, "model": "own_models:tiny", "train": TRAIN} for m in ("kd", "fitnet", "at")),
        {"name": "pkkd", "method": "pkkd", "model": "own_models:tiny", "family": "adder", "deploy": ["int8"], "train": TRAIN},
        {"name": "ft", "method": "ce", "model": "own_models:tiny", "weights": str(root / "imagenet_like.pth"), "train": TRAIN},
    ]
    (root / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(root / "c.yaml")]) == 0
    return root


def test_a_run_of_own_models_passes_every_verify(own_run):
    run = own_run / "run"
    teacher = json.loads((run / "teacher" / "metrics.json").read_text())
    assert teacher["source"].endswith("teacher.safetensors") and "history" not in teacher  # evaluated, not trained
    for name in ("kd", "fitnet", "at", "pkkd", "ft"):
        verify = json.loads((run / "students" / name / "verify.json").read_text())
        checks = [v for k, v in verify.items() if k != "counts"]
        assert checks and all(c["passed"] for c in checks) and verify["counts"]["agree"], (name, verify)
    assert (run / "students" / "pkkd" / "model.int8.onnx").is_file()
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert {row["student"] for row in summary["students"]} == {"kd", "fitnet", "at", "pkkd", "ft"}


def test_a_deploy_file_naming_a_factory_is_never_imported_from_the_file(own_run, tmp_path, capsys):
    """The file names own_models:tiny; were kdforge to import what a file names, a stranger's
    deploy.pt could name any module. Outside the run's config it is refused unimported."""
    import sys

    deploy = own_run / "run" / "students" / "kd" / "deploy.pt"
    sys.modules.pop("own_models", None)
    assert_refused(kdforge(capsys, "profile", deploy), "imports only where your config names it")
    assert_refused(kdforge(capsys, "export", deploy, "-o", tmp_path / "m.onnx"), "imports only where your config names it")
    assert "own_models" not in sys.modules
    sys.modules["own_models"] = own_models


def test_stages_of_torchvision_architectures_are_found(torchvision_models):
    x = torch.zeros(1, 3, 64, 64)
    assert discover(torchvision_models.resnet18(), x, "resnet18") == (["layer1", "layer2", "layer3", "layer4"], "fc")
    assert discover(torchvision_models.mobilenet_v2(), x, "mobilenet_v2") == (
        ["features.1", "features.3", "features.6", "features.13", "features.18"], "classifier.1")


@pytest.mark.slow
def test_torchvision_teacher_by_weights_into_adder_resnet18_and_mobilenet_v2_on_an_image_folder(torchvision_models, tmp_path,
                                                                                               monkeypatch):
    """The issue's torchvision run: a ResNet-18 teacher given by a weights file (1000 classes, as
    torchvision's ImageNet weights), KD and PKKD into an adderized ResNet-18, AT and FitNet into a
    MobileNetV2, on a hand-made image folder at 32x32."""
    from PIL import Image

    from kdforge.cli import main

    (tmp_path / "tv_factories.py").write_text(
        "import sys\nmodels = sys.modules['torchvision'].models\n"
        "def resnet18(**kw):\n    return models.resnet18(**kw)\n"
        "def mobilenet_v2(**kw):\n    return models.mobilenet_v2(**kw)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for split in ("train", "val"):
        for label in range(3):
            (tmp_path / "images" / split / f"c{label}").mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (40, 40), (80 * label, 30 * i, 120)).save(tmp_path / "images" / split / f"c{label}" / f"{i}.jpg")
    torch.save(torchvision_models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    raw = tiny_config(tmp_path / "run", data={"name": "folder", "root": str(tmp_path / "images"), "image_size": 32,
                                               "num_workers": 0})
    train = {"epochs": 1, "batch_size": 16, "lr": 0.01}
    raw["teacher"] = {"model": "tv_factories:resnet18", "weights": str(tmp_path / "resnet18.pth"), "train": train}
    raw["students"] = [
        {"name": "kd", "method": "kd", "model": "tv_factories:resnet18", "family": "adder", "train": train},
        {"name": "pkkd", "method": "pkkd", "model": "tv_factories:resnet18", "family": "adder", "train": train},
        {"name": "at", "method": "at", "model": "tv_factories:mobilenet_v2", "train": train},
        {"name": "fitnet", "method": "fitnet", "model": "tv_factories:mobilenet_v2", "train": train},
    ]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "c.yaml")]) == 0
    for name in ("kd", "pkkd", "at", "fitnet"):
        verify = json.loads((tmp_path / "run" / "students" / name / "verify.json").read_text())
        assert all(v["passed"] for k, v in verify.items() if k != "counts"), (name, verify)


def test_a_training_checkpoint_of_a_factory_model_is_not_imported_from_the_run_directory(own_run, capsys):
    assert_refused(kdforge(capsys, "profile", own_run / "run" / "students" / "at" / "checkpoint.pt"),
                   "imports only where your config names it")
