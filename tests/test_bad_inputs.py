"""Every user mistake ends with exit code 2, one sentence naming the culprit, no traceback, and
a run directory that still holds everything it held before."""

import hashlib
from pathlib import Path

import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from conftest import assert_one_sentence as _assert_one_sentence
from conftest import kdforge_cli as _kdforge


def _fingerprint(folder: Path) -> dict:
    """Hashes of every artifact (the manifest may record the failure; config.yaml is the last run's)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("config.yaml", "manifest.json")}


def _config(root: Path, raw: dict, mutate) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(raw))
    mutate(raw, root)
    path = root / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _foreign_onnx(root: Path) -> Path:
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = root / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)],
                                ir_version=10), path)
    return path


def _empty_folder_data(raw, root):
    for split in ("train", "val"):
        (root / "empty" / split / "cat").mkdir(parents=True, exist_ok=True)
    raw["data"] = {"name": "folder", "root": str(root / "empty")}


def _corrupt_teacher(raw, root):
    (root / "corrupt.pt").write_bytes(b"\x00not a checkpoint")
    raw["teacher"]["checkpoint"] = str(root / "corrupt.pt")


def _other_architecture_teacher(raw, root):
    from kdforge.train.models import create_model

    torch.save(create_model("resnet14", 10, 1).state_dict(), root / "resnet14.pt")
    raw["teacher"]["checkpoint"] = str(root / "resnet14.pt")


# (case, how to make it: config mutation or command, what the sentence names)
CONFIG_CASES = [
    ("unknown method", lambda raw, root: raw["students"][0].update(method="distil"), "unknown method 'distil'"),
    ("unknown model", lambda raw, root: raw["teacher"].update(model="resnet21"), "unknown model 'resnet21'"),
    ("misspelt key", lambda raw, root: raw["students"][0]["train"].update(epoch=3), "'students[0].train.epoch' is not a known setting"),
    ("wrong type", lambda raw, root: raw["teacher"]["train"].update(lr="fast"), "teacher.train.lr"),
    ("out-of-range overlap", lambda raw, root: raw["data"].update(overlap=1.5), "data.overlap"),
    ("missing data folder", lambda raw, root: raw.update(data={"name": "cifar10", "root": str(root / "nowhere")}), "does not exist"),
    ("empty data folder", _empty_folder_data, "holds no images"),
    ("corrupt checkpoint", _corrupt_teacher, "not a readable PyTorch checkpoint"),
    ("checkpoint of another architecture", _other_architecture_teacher, "another architecture"),
    ("GPU requested where none is", lambda raw, root: raw.update(device="cuda"), "no CUDA GPU"),
    ("read-only run directory", lambda raw, root: raw.update(run_dir="/proc/kdforge-run"), "cannot be created"),
]


@pytest.mark.parametrize("case,mutate,fragment", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(finished, case, mutate, fragment):
    root, raw = finished
    before = _fingerprint(root / "run")
    out = _kdforge("run", _config(root, raw, mutate))
    _assert_one_sentence(out, fragment)
    assert _fingerprint(root / "run") == before


def test_tensorrt_requested_where_it_is_absent(finished):
    root, raw = finished
    before, manifest = _fingerprint(root / "run"), (root / "run" / "manifest.json").read_bytes()
    try:
        out = _kdforge("run", root / "ok.yaml", "--only", "export", "--set", "export.tensorrt=true")
        _assert_one_sentence(out, "TensorRT is not installed", notices=1)  # export.tensorrt, the older spelling
        after = _fingerprint(root / "run")
        assert set(before) == set(after)  # nothing lost, no engine half-written
        assert all(after[k] == v for k, v in before.items() if not k.endswith(".onnx"))  # the ONNX files are rewritten
    finally:
        (root / "run" / "manifest.json").write_bytes(manifest)


def test_foreign_onnx_with_unsupported_ops(finished):
    """Counted all the same; the latency row says why it is not timed."""
    out = _kdforge("profile", _foreign_onnx(finished[0]))
    assert out.returncode == 0 and "MACs" in out.stdout, out.stderr
    assert "ONNX Runtime latency  not timed: ONNX Runtime cannot open" in out.stdout


def test_adder_model_without_the_kdforge_operator(finished, tmp_path):
    """No C compiler and no onnxruntime-extensions: the adder node cannot run, said in the latency row."""
    from kdforge.export.onnx_export import export_onnx
    from kdforge.train.models import create_model

    export_onnx(create_model("resnet8_adder", 10, 1), torch.zeros(2, 1, 8, 8), tmp_path / "ann.onnx")
    blocker = tmp_path / "blocker" / "onnxruntime_extensions"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    out = _kdforge_env({"CC": str(tmp_path / "no-compiler"), "KDFORGE_CACHE": str(tmp_path / "cache"),
                        "PYTHONPATH": str(blocker.parent)}, "profile", tmp_path / "ann.onnx")
    assert out.returncode == 0 and "adder" in out.stdout, out.stderr  # counted all the same
    assert "not timed: " in out.stdout and "install onnxruntime-extensions" in out.stdout


def test_corrupt_manifest(finished, tmp_path):
    root, raw = finished
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{not json")
    raw = dict(raw, run_dir=str(run))
    out = _kdforge("run", _config(root, raw, lambda r, _: None))
    _assert_one_sentence(out, "manifest.json is corrupt")
    assert (run / "manifest.json").read_text() == "{not json"


def test_partial_onnx_file_left_by_an_interrupted_export(finished):
    """A model.onnx cut short (e.g. copied while being written) fails verification by name."""
    root, _ = finished
    onnx_file = root / "run" / "students" / "ce" / "model.onnx"
    good = onnx_file.read_bytes()
    onnx_file.write_bytes(good[: len(good) // 3])
    try:
        out = _kdforge("run", root / "ok.yaml", "--only", "verify", "--force")
        _assert_one_sentence(out, "not a readable ONNX file")
    finally:
        onnx_file.write_bytes(good)


def test_an_exception_during_export_leaves_no_partial_file(tmp_path, monkeypatch):
    from kdforge.export import onnx_export
    from kdforge.train.models import create_model

    def broken_check(path):
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(onnx_export, "check_onnx", broken_check)
    with pytest.raises(RuntimeError):
        onnx_export.export_onnx(create_model("resnet8", 10, 1), torch.zeros(2, 1, 8, 8), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_yaml_and_missing_config(finished, tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [oops\n")
    _assert_one_sentence(_kdforge("run", tmp_path / "broken.yaml"), "not valid YAML at line")
    _assert_one_sentence(_kdforge("run", tmp_path / "absent.yaml"), "does not exist")


def _kdforge_env(env: dict, *args):
    return _kdforge(*args, env=env)


