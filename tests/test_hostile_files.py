"""Files from strangers: for every command and config key that reads a file, a file whose loading
would run a command (here: create a marker file) is refused with exit code 2 and one sentence,
and the command never runs. Files kdforge wrote before (the current format) still load."""

import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_one_sentence, kdforge_cli


class _RunsACommand:
    """Unpickling this calls os.system: what a hostile checkpoint or data file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile_torch_file(path: Path, marker: Path, legacy: bool = False, **content) -> Path:
    payload = {**content, "payload": _RunsACommand(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished tiny run and a config that points at the copy."""
    root, raw = finished
    shutil.copytree(root / "run", tmp_path / "run")
    raw = {**raw, "run_dir": str(tmp_path / "run")}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path, raw


def _refused(out, marker: Path) -> None:
    assert_one_sentence(out, "which can run code")
    assert not marker.exists(), "the hostile file ran its command"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_profile_and_export_refuse_a_hostile_deploy_file(tmp_path, legacy):
    marker = tmp_path / "MARKER"
    deploy = _hostile_torch_file(tmp_path / "deploy.pt", marker, legacy, format="kdforge-deploy-1")
    _refused(kdforge_cli("profile", deploy), marker)
    _refused(kdforge_cli("export", deploy), marker)


def test_profile_refuses_a_hostile_training_checkpoint(run_copy):
    folder, _ = run_copy
    marker = folder / "MARKER"
    _hostile_torch_file(folder / "run" / "students" / "ce" / "checkpoint.pt", marker)
    _refused(kdforge_cli("profile", folder / "run" / "students" / "ce" / "checkpoint.pt"), marker)


@pytest.mark.parametrize("planted,stage", [
    ("teacher/checkpoint.pt", "distill"),          # the distill stage reads the teacher
    ("students/kd/checkpoint.pt", "distill"),      # resuming reads the last checkpoint
    ("students/kd/checkpoint.pt", "strip"),        # strip reads the trained distiller
    ("students/kd/deploy.pt", "export"),           # export, verify and profile read deploy.pt
])
def test_pipeline_stages_refuse_hostile_files_in_the_run_directory(run_copy, planted, stage):
    folder, _ = run_copy
    marker = folder / "MARKER"
    _hostile_torch_file(folder / "run" / planted, marker)
    _refused(kdforge_cli("run", folder / "ok.yaml", "--only", stage, "--force"), marker)


def test_config_keys_that_name_checkpoints_refuse_hostile_files(run_copy):
    folder, raw = run_copy
    marker = folder / "MARKER"
    evil = _hostile_torch_file(folder / "evil.pt", marker)
    teacher = {**raw, "teacher": {**raw["teacher"], "checkpoint": str(evil)}}
    (folder / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    _refused(kdforge_cli("run", folder / "teacher.yaml"), marker)

    pkkd = {**raw, "students": [{"name": "p", "method": "pkkd", "model": "resnet8_adder", "train": {"epochs": 1},
                                 "options": {"teacher_checkpoint": str(evil)}}]}
    (folder / "pkkd.yaml").write_text(yaml.safe_dump(pkkd))
    _refused(kdforge_cli("run", folder / "pkkd.yaml"), marker)


def _cifar_folder(root: Path, batch: dict) -> Path:
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def test_data_root_refuses_a_hostile_cifar_pickle(run_copy):
    folder, raw = run_copy
    marker = folder / "MARKER"
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    root = _cifar_folder(folder / "cifar", good)
    (root / "data_batch_2").write_bytes(pickle.dumps({**good, b"batch_label": _RunsACommand(marker)}))
    cfg = {**raw, "data": {"name": "cifar10", "root": str(root)}}
    (folder / "cifar.yaml").write_text(yaml.safe_dump(cfg))
    _refused(kdforge_cli("run", folder / "cifar.yaml"), marker)


@pytest.mark.parametrize("content,fragment", [
    ({b"data": np.zeros((4, 3072), np.float64), b"labels": [0, 1, 2, 3]}, "'data' is not a uint8 array"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 12]}, "one label in [0, 10)"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}, "one label in [0, 10)"),
    ({b"labels": [0, 1, 2, 3]}, "no 'data' entry"),
    ([1, 2, 3], "no 'data' entry"),
])
def test_malformed_cifar_batches_are_named(tmp_path, content, fragment):
    from kdforge.config import DataConfig
    from kdforge.errors import UserError
    from kdforge.train.data import build_data

    root = _cifar_folder(tmp_path / "cifar", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]})
    (root / "test_batch").write_bytes(pickle.dumps(content))
    with pytest.raises(UserError, match=f"test_batch.*{fragment.replace('[', '.').replace(')', '.')}"):
        build_data(DataConfig(name="cifar10", root=root), seed=0)


def test_yaml_config_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evil.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    out = kdforge_cli("run", tmp_path / "evil.yaml")
    assert_one_sentence(out, "not valid YAML")
    assert not marker.exists()


def test_checkpoints_in_the_current_format_still_load(finished, tmp_path):
    """What kdforge wrote before safe loading (training checkpoints carry NumPy's RNG state and,
    with a step schedule, a Counter of milestones) loads, and so does a plain state dict."""
    from kdforge.untrusted import load_torch

    root, _ = finished
    for artifact in ("teacher/checkpoint.pt", "students/kd/checkpoint.pt", "students/kd/deploy.pt"):
        assert isinstance(load_torch(root / "run" / artifact, "artifact"), dict)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 5])
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    torch.save(state, tmp_path / "old.pt")
    loaded = load_torch(tmp_path / "old.pt", "checkpoint")
    np.random.set_state(loaded["rng"]["numpy"])
    random.setstate(loaded["rng"]["python"])
    assert loaded["scheduler"]["milestones"] == scheduler.state_dict()["milestones"]


def _adder_file(path: Path, strides, pads, weight_shape, input_shape=(1, 3, 8, 8)) -> Path:
    """A one-node adder model as another exporter might write it: W an initializer, X declared."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("AdderConv2d", ["x", "w"], ["y"], domain="kdforge", name="conv_7", strides=strides, pads=pads)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones(weight_shape, np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("kdforge", 1)],
                                ir_version=7), path)
    return path


@pytest.mark.parametrize("strides,pads,weight,fragment", [
    ([0, 1], [1, 1, 1, 1], (4, 3, 3, 3), "node 'conv_7': attribute 'strides' must be 2 integers >= 1"),
    ([1, 1], [1, 0, 0, 1], (4, 3, 3, 3), "node 'conv_7': attribute 'pads' must be symmetric"),
    ([1, 1], [-2, 1, -2, 1], (4, 3, 3, 3), "node 'conv_7': attribute 'pads' must be 4 integers >= 0"),
    ([1, 1], [1, 1, 1, 1], (4, 3, 3), "node 'conv_7': weight W must be a non-empty 4-D tensor"),
    ([1, 1], [1, 1, 1, 1], (4, 2, 3, 3), "node 'conv_7': weight W has 2 input channels but input X has 3"),
    ([1, 1], [0, 0, 0, 0], (4, 3, 9, 9), "node 'conv_7': the 9x9 kernel"),
])
def test_profile_refuses_malformed_adder_nodes_in_one_sentence(tmp_path, strides, pads, weight, fragment):
    """Caught by the loader (attributes, weight) or by the kernel at the first run (shapes)."""
    out = kdforge_cli("profile", _adder_file(tmp_path / "bad.onnx", strides, pads, weight))
    assert_one_sentence(out, fragment)


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20], ids=["text", "truncated-jpeg"])
def test_a_hand_made_image_folder_with_a_broken_file_names_it(tmp_path, content):
    from PIL import Image

    from kdforge.config import DataConfig
    from kdforge.errors import UserError
    from kdforge.train.data import build_data

    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 10), (i * 40, 0, 0)).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "val" / "dog" / "broken.jpg").write_bytes(content)
    bundle = build_data(DataConfig(name="folder", root=tmp_path, image_size=8), seed=0)
    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        [bundle.test[i] for i in range(len(bundle.test))]


def test_onnx_external_data_is_not_followed(tmp_path):
    """An initializer stored "elsewhere" could name any file on the machine: refused, not read."""
    import onnx

    model = onnx.load(_adder_file(tmp_path / "one.onnx", [1, 1], [1, 1, 1, 1], (4, 3, 3, 3)))
    onnx.save(model, tmp_path / "external.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    out = kdforge_cli("profile", tmp_path / "external.onnx")
    assert_one_sentence(out, "in an external data file")
