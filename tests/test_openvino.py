"""OpenVINO as a deploy entry (kdforge/export/artifacts/openvino.py): it reads kdforge's standard
ONNX files, computes in f32 as kdforge sets it, and the pipeline verifies, times and reports it.

OpenVINO runs in a fresh process in every test (`in_fresh_process`, `run_tiny`), never in the test
runner's: its CPU plugin's thread pool stays in the process that loaded it, and pytest-xdist
workers that had run it in process were lost in the middle of later tests (3 runs of 3 here)."""

import json

import numpy as np
import pytest
import torch

from conftest import report_tables, run_python, run_tiny, tiny_config
from kdforge.config import parse_config
from kdforge.errors import UserError
from kdforge.export.artifacts import artifact

pytest.importorskip("openvino")


def _exported(tmp_path, model_name: str, **kwargs):
    from kdforge.export.onnx_export import export_onnx
    from kdforge.train.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, 10, 1).eval()
    with torch.no_grad():  # batch-norm statistics away from the identity, as training leaves them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / f"{model_name}.onnx", 18, **kwargs)
    return model, path


def _images(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 1, 8, 8)).astype(np.float32)


def in_fresh_process(check: str, *args) -> None:
    """Runs this module's function `check(*args)` in a fresh interpreter."""
    run_python(f"import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
               f"from test_openvino import {check}\n{check}(*{tuple(map(str, args))!r})")


@pytest.mark.parametrize("model_name, portable", [("resnet8", False), ("resnet8_binary", False), ("resnet8_adder", True)])
def test_openvino_runs_kdforge_fp32_files_in_f32_as_pytorch_does(tmp_path, model_name, portable):
    in_fresh_process("check_fp32_file", tmp_path, model_name, portable)


def test_openvino_runs_the_fp16_and_int8_qdq_files(tmp_path):
    in_fresh_process("check_fp16_and_int8_files", tmp_path)


def test_a_file_with_kdforge_adder_nodes_is_refused_in_one_sentence(tmp_path):
    in_fresh_process("check_adder_nodes_refused", tmp_path)
    raw = tiny_config(tmp_path / "run")
    raw["students"][2]["deploy"] = ["openvino-int8"]
    with pytest.raises(UserError, match="student 'ann' cannot deploy openvino-int8: an AdderNet's INT8 file holds"):
        parse_config(raw)


def check_fp32_file(tmp_path, model_name, portable):
    from pathlib import Path

    tmp_path, portable = Path(tmp_path), portable == "True"
    model, path = _exported(tmp_path, model_name, portable=portable)
    run = artifact("openvino").open(path, threads=1)
    assert run.info["inference_precision"] == "f32"  # the hint reached the compiled model
    x = _images()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = run(x)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-3 * max(1.0, np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()


def check_fp16_and_int8_files(tmp_path):
    from pathlib import Path

    from kdforge.export.fp16 import Float16Student
    from kdforge.export.int8_cpu import SCHEMES
    from kdforge.export.onnx_export import export_onnx
    from kdforge.export.ort import run, session
    from kdforge.export.quantize import quantize_int8

    tmp_path = Path(tmp_path)
    model, path = _exported(tmp_path, "resnet8")
    fp16 = export_onnx(Float16Student(model), torch.zeros(2, 1, 8, 8), tmp_path / "m.fp16.onnx", 18)
    int8 = quantize_int8(path, tmp_path / "m.int8.onnx", _images(64), SCHEMES["x86-vnni"])
    x = _images()
    for name, file in (("openvino-fp16", fp16), ("openvino-int8", int8)):
        reference = run(session(file), x)  # the same file in ONNX Runtime
        got = artifact(name).open(file, threads=1)(x)
        assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.9, name
        assert np.abs(got - reference).max() <= 0.1 * np.abs(reference).max(), name


def check_adder_nodes_refused(tmp_path):
    from pathlib import Path

    _, path = _exported(Path(tmp_path), "resnet8_adder")
    with pytest.raises(UserError, match="OpenVINO cannot compile .* the file needs an operator OpenVINO lacks"):
        artifact("openvino").open(path, threads=1)


def test_the_pipeline_verifies_times_and_reports_openvino(tmp_path):
    """A CNN on model.onnx and model.int8.onnx, an AdderNet on its portable file, beside ONNX Runtime."""
    ce, _, ann = tiny_config("unused")["students"]
    trained = {"epochs": 4, "batch_size": 64, "lr": 0.1}  # a student that classifies: INT8 of one at chance follows any rounding
    out = run_tiny(tmp_path, [{**ce, "deploy": ["int8", "openvino", "openvino-int8"], "train": trained},
                              {**ann, "deploy": ["openvino"]}], teacher=None)
    assert out.returncode == 0, out.stderr
    students = tmp_path / "run" / "students"
    assert (students / "ann" / "model.portable.onnx").is_file() and not (students / "ce" / "model.portable.onnx").exists()
    for name, entries in (("ce", ("openvino", "openvino-int8")), ("ann", ("openvino",))):
        verify = json.loads((students / name / "verify.json").read_text())
        profile = json.loads((students / name / "profile.json").read_text())
        for entry in entries:
            assert verify[entry]["passed"], (name, entry)
            assert profile["latency"][entry]["inference_precision"] == "f32" and profile["latency"][entry]["p50_ms"] > 0
    main, details = report_tables((tmp_path / "run" / "report" / "report.md").read_text())[:2]
    assert all(row["OpenVINO p50 (ms)"] != "-" for row in main)  # int8 for ce, fp32 for ann
    assert details[0]["OpenVINO int8 p50 (ms)"] != "-" and details[1]["OpenVINO int8 p50 (ms)"] == "-"
