"""Models kdforge did not define (tests/own_models.py, torchvision's definitions where its wheel is
here) as teachers and students: named by factory, started from a weights file as torchvision, timm
or the user's own training wrote it, their stages found or named, converted to AdderNet or
binary twins, and carried through strip, export, INT8 and verify like registered models."""

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import own_models
from conftest import tiny_config
from test_hostile_inputs import assert_refused, kdforge
from test_torchvision_counts import timm, torchvision_models  # noqa: F401  (fixtures)
from kdforge.errors import UserError
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.binary import BinaryConv2d
from kdforge.train.methods import list_methods, method_class
from kdforge.train.models.build import build_network
from kdforge.train.models.discovery import discover
from kdforge.train.models.foreign import ForeignNet

TRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.05}


def _section(**keys):
    from kdforge.config import ModelSection

    return ModelSection(**{"model": "own_models:tiny", **keys})


def _found(net: nn.Module, size: int, channels: int = 3) -> tuple[list[str], str]:
    found = discover(net, torch.zeros(2, channels, size, size), type(net).__name__)
    return found.stages, found.classifier


@pytest.mark.parametrize("factory,stages,classifier", [
    ("tiny", ["body.3", "body.4", "body.5"], "head"),  # blocks inside one nn.Sequential with the stem
    ("depthwise", ["8", "11"], "14"),  # no blocks: the last layer before the downsampling and the last map larger than 1x1
    ("dict_net", ["blocks.b1", "blocks.b3", "blocks.b4"], "classifier"),  # blocks in an nn.ModuleDict, called in a loop
    ("nested", ["stages.0.1", "stages.1.1"], "fc"),  # nn.ModuleLists of nn.ModuleLists, a functional pool between
    ("inline_concat", ["mixed_a", "mixed_b", "mixed_c"], "logits"),  # branch-and-concatenate blocks as attributes
    ("encoder_decoder", ["encoder.1", "decoder"], "head"),  # up-sampling ends a stage too; the first block is the stem
])
def test_stages_and_classifier_are_found_from_one_forward_pass_in_call_order(factory, stages, classifier):
    assert _found(getattr(own_models, factory)(), 8, 1) == (stages, classifier)


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
    (lambda raw: raw["teacher"].update(model="resnet8", stages=["stages.0"]), "stages, classifier and output describe a factory model"),
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


def test_tofd_from_a_teacher_given_trained_is_refused_and_fine_tunes_it_with_heads_from_its_weights(tmp_path, capsys):
    """TOFD's teacher carries auxiliary heads that the teacher stage trains; a teacher given trained has none."""
    torch.save(own_models.tiny().state_dict(), tmp_path / "teacher.pt")
    raw = tiny_config(tmp_path / "run")
    raw["teacher"] = {"model": "own_models:tiny", "weights": str(tmp_path / "teacher.pt"), "train": {"epochs": 0}}
    raw["students"] = [raw["students"][1], {"name": "t", "method": "tofd", "model": "own_models:dict_net", "train": TRAIN}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert_refused(kdforge(capsys, "run", tmp_path / "c.yaml"),
                   "students[1] uses method 'tofd', whose teacher the teacher stage trains with tofd_teacher")
    raw["teacher"]["train"] = TRAIN
    raw["students"] = raw["students"][1:]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = kdforge(capsys, "run", tmp_path / "c.yaml")
    assert code == 0, err
    verify = json.loads((tmp_path / "run" / "students" / "t" / "verify.json").read_text())
    assert all(v["passed"] for k, v in verify.items() if k != "counts") and verify["counts"]["agree"]


def test_jointrd_on_a_model_kdforge_did_not_define_is_one_sentence(tmp_path, capsys):
    raw = tiny_config(tmp_path / "run")
    raw["students"] = [{"name": "j", "method": "jointrd", "model": "own_models:tiny", "train": TRAIN}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert_refused(kdforge(capsys, "run", tmp_path / "c.yaml"), "own_models:tiny has no residual blocks of kdforge's ResNets")


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A teacher given only as a weights file, never trained here; KD, FitNet and AT students of the
    user's architecture; a PKKD AdderNet converted from it and shipped as INT8; a student
    fine-tuned from weights with 1000 classes; one whose forward returns a dict, shipped as INT8."""
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
        {"name": "scores", "method": "kd", "model": "own_models:returning", "model_args": {"kind": "dict"}, "output": "scores",
         "deploy": ["int8"], "train": TRAIN},
    ]
    (root / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(root / "c.yaml")]) == 0
    return root


def test_a_run_of_own_models_passes_every_verify(own_run):
    run = own_run / "run"
    teacher = json.loads((run / "teacher" / "metrics.json").read_text())
    assert teacher["source"].endswith("teacher.safetensors") and "history" not in teacher  # evaluated, not trained
    for name in ("kd", "fitnet", "at", "pkkd", "ft", "scores"):
        verify = json.loads((run / "students" / name / "verify.json").read_text())
        checks = [v for k, v in verify.items() if k != "counts"]
        assert checks and all(c["passed"] for c in checks) and verify["counts"]["agree"], (name, verify)
    assert (run / "students" / "pkkd" / "model.int8.onnx").is_file()
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert {row["student"] for row in summary["students"]} == {"kd", "fitnet", "at", "pkkd", "ft", "scores"}


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


@pytest.mark.parametrize("name,size,stages,classifier", [
    ("resnet18", 64, ["layer1", "layer2", "layer3", "layer4"], "fc"),
    ("mobilenet_v2", 64, ["features.1", "features.3", "features.6", "features.13", "features.18"], "classifier.1"),
    ("efficientnet_b0", 64, ["features.1", "features.2", "features.3", "features.5", "features.8"], "classifier.1"),
    ("convnext_tiny", 64, ["features.1", "features.3", "features.5", "features.7"], "classifier.2"),
    ("regnet_y_400mf", 64, [f"trunk_output.block{i}" for i in range(1, 5)], "fc"),  # the stages inside the trunk, not it
    ("densenet121", 64, [f"features.denseblock{i}" for i in range(1, 5)], "classifier"),
    ("inception_v3", 299, ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"], "fc"),  # valid convs' lost pixels
    ("vgg11", 64, ["features.1", "features.4", "features.9", "features.14", "features.19"], "classifier.6"),  # layers; no pool stage
])
def test_stages_of_torchvision_architectures_are_found(torchvision_models, name, size, stages, classifier):
    options = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    assert _found(getattr(torchvision_models, name)(**options), size) == (stages, classifier)


@pytest.mark.parametrize("name,size,blocks,example", [("test_vit", 160, "blocks.0 ... blocks.5 (6, each 101x64)", "blocks.1, blocks.3, blocks.5"),
                                                      ("deit_tiny_patch16_224", 224, "blocks.0 ... blocks.11 (12, each 197x192)",
                                                       "blocks.3, blocks.7, blocks.11")])
def test_a_vision_transformer_is_one_stage_and_the_notes_name_the_blocks(timm, name, size, blocks, example):
    found = discover(timm.create_model(name, num_classes=10), torch.zeros(2, 3, size, size), name)
    assert (found.stages, found.classifier) == (["blocks"], "head")  # the patch embedding is the stem
    assert len(found.notes) == 1 and blocks in found.notes[0]
    assert f"config key 'stages', e.g. stages: [{example}]" in found.notes[0]


@pytest.mark.parametrize("name,stages,classifier", [
    ("resnet18", ["layer1", "layer2", "layer3", "layer4"], "fc"),
    ("test_resnet", ["layer1", "layer2", "layer3", "layer4"], "fc"),  # a deep stem, not a stage
    ("efficientnet_b0", ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"], "classifier"),
    ("convnext_atto", ["stages.0", "stages.1", "stages.2", "stages.3"], "head.fc"),
    ("regnetx_002", ["s1", "s2", "s3", "s4"], "head.fc"),
    ("mobilenetv3_small_100", ["blocks.0", "blocks.1", "blocks.3", "blocks.5"], "classifier"),  # squeeze-excite's 1x1 maps skipped
])
def test_stages_of_timm_architectures_are_found(timm, name, stages, classifier):
    assert _found(timm.create_model(name, num_classes=10), 64) == (stages, classifier)


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


REFUSALS = {  # (student, teacher) -> {method: a fragment of its one sentence}
    "vit": {"jointrd": "no residual blocks of kdforge's ResNets", "pkkd": "the student's stages hold none"},
    "nested<-dict_net": {"jointrd": "no residual blocks of kdforge's ResNets", "tofd": "the student has 2 stages, the teacher 3"},
}


@pytest.mark.parametrize("pair", list(REFUSALS))
@pytest.mark.parametrize("method", [m for m in list_methods() if m != "tofd_teacher"])
def test_every_method_trains_on_what_discovery_gives_or_refuses_before_training(timm, pair, method):
    """A vision transformer (one stage of tokens) and a student with fewer stages than its teacher:
    each method's losses are tensors that back-propagate, or it refuses in one sentence when built."""
    def network(model: str, family=None) -> nn.Module:
        args = {"img_size": 8, "patch_size": 2, "in_chans": 1} if model == "timm:test_vit" else {}
        return build_network(_section(model=model, model_args=args, family=family), 10, 1, 8)[0]

    student, teacher = ("timm:test_vit", "timm:test_vit") if pair == "vit" else ("own_models:nested", "own_models:dict_net")
    cls = method_class(method)
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))

    def build():
        return cls(network(student, "adder" if method == "pkkd" else None), network(teacher) if cls.needs_teacher else None,
                   cls.Options(), x[:2])

    if method in REFUSALS[pair]:
        with pytest.raises(UserError, match=REFUSALS[pair][method]):
            build()
        return
    distiller = build()
    distiller.epochs = 2
    _, losses = distiller.train()(x, y, 0.0)
    assert losses and all(torch.is_tensor(v) and v.ndim == 0 and torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in distiller.student.parameters())


@pytest.mark.parametrize("kind,output", [("tuple", 1), ("dict", "scores"), ("dataclass", "scores"), ("logits-dict", None)])
def test_the_output_key_names_the_logits_in_what_the_forward_returns(kind, output):
    model, notes = build_network(_section(model="own_models:returning", model_args={"kind": kind}, output=output), 10, 1, 8)
    x = torch.randn(3, 1, 8, 8)
    assert model.classifier_path == "head" and "stages body.3, body.4, body.5; classifier head" in notes
    torch.testing.assert_close(model(x), model.net.head(torch.flatten(model.net.pool(model.net.body(x)), 1)))


@pytest.mark.parametrize("kind,output,fragment", [
    ("tuple", None, "no nn.Linear gives the logits ((2, 64))"),  # the tuple's first item is the embedding
    ("dict", None, "returns a dict with keys embedding, scores, with no logits tensor"),
    ("dict", "score", "where output 'score' is no tensor"),
    ("dataclass", 0, "returns a Prediction, where output 0 is no tensor"),
    ("tuple", 2, "returns a tuple of 2, where output 2 is no tensor"),
])
def test_an_output_kdforge_cannot_read_is_one_sentence(kind, output, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as error:
        build_network(_section(model="own_models:returning", model_args={"kind": kind}, output=output), 10, 1, 8)
    assert "config key" in str(error.value) and "\n" not in str(error.value)


def test_torchvisions_inception_in_training_mode_gives_its_logits_not_the_auxiliary_ones(torchvision_models):
    from kdforge.train.models.foreign import ForeignNet

    net = torchvision_models.inception_v3(num_classes=10, aux_logits=True, init_weights=False)
    model = ForeignNet(net, ["Mixed_7c"], "fc", "inception_v3").train()
    out = model(torch.randn(2, 3, 299, 299))
    assert out.shape == (2, 10) and not isinstance(out, tuple)


def test_a_timm_student_distils_end_to_end_from_a_timm_teacher_given_by_its_weights_file(timm, tmp_path, capsys):
    """timm:NAME as teacher (a state dict as timm's models save it, never trained here) and as a
    vision-transformer student shipped as INT8: every verify passes."""
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", in_chans=1, num_classes=10).state_dict(), tmp_path / "teacher.pth")
    raw = tiny_config(tmp_path / "run")
    raw["teacher"] = {"model": "timm:test_resnet", "model_args": {"in_chans": 1}, "weights": str(tmp_path / "teacher.pth"),
                      "train": {"epochs": 0}}
    raw["students"] = [{"name": "vit", "method": "kd", "model": "timm:test_vit", "deploy": ["int8"], "train": TRAIN,
                        "model_args": {"img_size": 8, "patch_size": 2, "in_chans": 1}}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, out, err = kdforge(capsys, "run", tmp_path / "c.yaml")
    assert code == 0, err
    assert "classifier head replaced: 1000 -> 10 classes (the data's)" in out and "one stage (blocks)" in out
    verify = json.loads((tmp_path / "run" / "students" / "vit" / "verify.json").read_text())
    assert {"onnxruntime", "onnxruntime-int8"} <= set(verify) and all(v["passed"] for k, v in verify.items() if k != "counts")


@pytest.mark.slow  # 1-3 min each: full-size timm architectures, 8x8 digits
@pytest.mark.parametrize("name,args", [("resnet18", {"in_chans": 1}), ("efficientnet_b0", {"in_chans": 1}),
                                       ("vit_tiny_patch16_224", {"in_chans": 1, "img_size": 8, "patch_size": 2})])
def test_timm_resnet_efficientnet_and_vit_students_distil_end_to_end(timm, tmp_path, capsys, name, args):
    raw = tiny_config(tmp_path / "run")
    raw["teacher"] = {"model": "timm:test_resnet", "model_args": {"in_chans": 1}, "train": TRAIN}
    raw["students"] = [{"name": "s", "method": "kd", "model": f"timm:{name}", "model_args": args, "train": TRAIN}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = kdforge(capsys, "run", tmp_path / "c.yaml")
    assert code == 0, err
    verify = json.loads((tmp_path / "run" / "students" / "s" / "verify.json").read_text())
    assert verify["onnxruntime"]["passed"] and verify["counts"]["agree"]


HF_VIT = {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
          "intermediate_size": 64, "num_labels": 10}


def test_hugging_face_image_classifiers_distil_end_to_end_from_their_configs(tmp_path, capsys):
    """hf:CLASS models built from config settings (no weights): a ConvNeXt teacher, a ViT (whose
    forward returns an ImageClassifierOutput) and a ResNet as students, the ViT shipped as INT8."""
    pytest.importorskip("transformers")
    raw = tiny_config(tmp_path / "run")
    convnext = {"num_channels": 1, "patch_size": 1, "num_stages": 3, "hidden_sizes": [16, 32, 64], "depths": [1, 1, 1], "num_labels": 10}
    raw["teacher"] = {"model": "hf:ConvNextForImageClassification", "model_args": convnext, "train": TRAIN}
    raw["students"] = [
        {"name": "vit", "method": "kd", "model": "hf:ViTForImageClassification", "model_args": HF_VIT, "deploy": ["int8"], "train": TRAIN},
        {"name": "resnet", "method": "at", "model": "hf:ResNetForImageClassification", "train": TRAIN,
         "model_args": {"num_channels": 1, "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "num_labels": 10}},
    ]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, out, err = kdforge(capsys, "run", tmp_path / "c.yaml")
    assert code == 0, err
    assert "stages convnext.encoder.stages.0, convnext.encoder.stages.1, convnext.encoder.stages.2" in out
    for name in ("vit", "resnet"):
        verify = json.loads((tmp_path / "run" / "students" / name / "verify.json").read_text())
        assert all(v["passed"] for k, v in verify.items() if k != "counts") and verify["counts"]["agree"], (name, verify)


@pytest.mark.parametrize("change,fragment", [
    ({"patch_sise": 2}, "ViTConfig has no setting patch_sise; its settings include"),
    ({"image_size": 32}, "hf:ViTForImageClassification fails on the data's images (2x1x8x8)"),  # the model's own refusal
])
def test_a_hugging_face_model_kdforge_cannot_build_or_run_is_one_sentence(tmp_path, capsys, change, fragment):
    pytest.importorskip("transformers")
    raw = tiny_config(tmp_path / "run")
    raw["students"] = [{"name": "vit", "method": "ce", "model": "hf:ViTForImageClassification", "train": TRAIN,
                        "model_args": {**HF_VIT, **change}}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert_refused(kdforge(capsys, "run", tmp_path / "c.yaml"), fragment)


@pytest.mark.slow  # about a minute per style
@pytest.mark.parametrize("style", ["dict_net", "nested", "inline_concat", "encoder_decoder"])
def test_each_style_of_network_runs_every_feature_method_end_to_end_from_a_weights_file_teacher(style, tmp_path, capsys):
    """The style's network as teacher (its weights file, fine-tuned one epoch so that TOFD's heads
    train) and as KD, FitNet, AT, TOFD, PKKD-AdderNet and INT8 students: every verify passes."""
    torch.manual_seed(0)
    torch.save(getattr(own_models, style)().state_dict(), tmp_path / "teacher.pt")
    model = f"own_models:{style}"
    raw = tiny_config(tmp_path / "run")
    raw["teacher"] = {"model": model, "weights": str(tmp_path / "teacher.pt"), "train": TRAIN}
    raw["students"] = [*({"name": m, "method": m, "model": model, "train": TRAIN} for m in ("kd", "fitnet", "at", "tofd")),
                       {"name": "pkkd", "method": "pkkd", "model": model, "family": "adder", "train": TRAIN},
                       {"name": "int8", "method": "kd", "model": model, "deploy": ["int8"], "train": TRAIN}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = kdforge(capsys, "run", tmp_path / "c.yaml")
    assert code == 0, err
    for name in ("kd", "fitnet", "at", "tofd", "pkkd", "int8"):
        verify = json.loads((tmp_path / "run" / "students" / name / "verify.json").read_text())
        assert all(v["passed"] for k, v in verify.items() if k != "counts") and verify["counts"]["agree"], (name, verify)
