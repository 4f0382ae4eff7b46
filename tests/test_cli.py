import json
import subprocess
import sys

import pytest

from conftest import tiny_config
from kdforge.cli import main


def _kdforge(*args):
    return subprocess.run([sys.executable, "-m", "kdforge", *map(str, args)], capture_output=True, text=True)


def test_methods_and_models_list_the_registries(capsys):
    assert main(["methods"]) == 0
    assert {"ce", "kd"} <= {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert main(["models"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"resnet20", "cifar_resnet18", "wrn_40_2", "vgg_small", "mobilenetv2", "imagenet_resnet50"} <= names


@pytest.mark.parametrize("mutate,fragment", [
    (lambda c: c.update(epochz=3), "key 'epochz' is not a known setting"),
    (lambda c: c["students"][0].update(method="nope"), "unknown method 'nope'"),
    (lambda c: c.update(device="cuda"), "no CUDA GPU"),
])
def test_user_mistakes_exit_2_with_one_sentence(tmp_path, write_config, mutate, fragment):
    raw = tiny_config(tmp_path / "run")
    mutate(raw)
    out = _kdforge("run", write_config(raw))
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_profile_command_on_a_deployed_model(tmp_path):
    from kdforge.export.strip import save_deployed
    from kdforge.train.models import create_model

    save_deployed(tmp_path / "deploy.pt", create_model("resnet8", 10, 1),
                  {"model": "resnet8", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8})
    out = _kdforge("profile", tmp_path / "deploy.pt", "--layers", "--json", tmp_path / "p.json")
    assert out.returncode == 0, out.stderr
    assert "MACs" in out.stdout and "stages.0.0.conv1" in out.stdout
    assert json.loads((tmp_path / "p.json").read_text())["costs"]["totals"]["params"] == 77_754
    assert _kdforge("profile", tmp_path / "missing.onnx").returncode == 2


def test_set_overrides_a_config_key(tmp_path, write_config):
    from kdforge.config import load_config

    path = write_config(tiny_config(tmp_path / "run"))
    cfg = load_config(path, ("export.portable=true", "seed=7"))
    assert cfg.export.portable is True and cfg.seed == 7
    out = _kdforge("run", path, "--set", "seed")
    assert out.returncode == 2 and "write it as key=value" in out.stderr


def test_export_command_writes_onnx_and_refuses_tensorrt_without_it(tmp_path):
    from kdforge.export.strip import save_deployed
    from kdforge.train.models import create_model

    save_deployed(tmp_path / "deploy.pt", create_model("resnet8_adder", 10, 1),
                  {"model": "resnet8_adder", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8})
    out = _kdforge("export", tmp_path / "deploy.pt")
    assert out.returncode == 0 and "model.onnx" in out.stdout and "custom" in out.stdout and (tmp_path / "model.onnx").is_file()
    out = _kdforge("export", tmp_path / "deploy.pt", "--backend", "tensorrt", "-o", tmp_path / "t.onnx")
    assert out.returncode == 2 and ("TensorRT is not installed" in out.stderr or "no CUDA" in out.stderr or "GPU" in out.stderr)
    out = _kdforge("export", tmp_path / "deploy.pt", "--backend", "tensorrt", "--fp16", "-o", tmp_path / "t.onnx")
    assert out.returncode == 2 and "adder student, which cannot deploy onnxruntime-fp16" in out.stderr and "drop --fp16" in out.stderr


def test_profile_command_on_a_training_checkpoint(tmp_path):
    from kdforge.config import parse_config
    from kdforge.pipeline.runner import run_pipeline

    raw = tiny_config(tmp_path / "run")
    raw["students"] = raw["students"][:1]
    run_pipeline(parse_config(raw), only=["data", "teacher", "distill"], log=lambda line: None)
    for checkpoint, params in ((tmp_path / "run" / "teacher" / "checkpoint.pt", "77,754"),
                               (tmp_path / "run" / "students" / "ce" / "checkpoint.pt", "77,754")):
        out = _kdforge("profile", checkpoint)
        assert out.returncode == 0, out.stderr
        assert params in out.stdout and "training checkpoint" in out.stdout


def test_without_onnxruntime_a_run_names_the_extra_to_install_before_it_trains(tmp_path):
    """ONNX Runtime's CPU and GPU builds are the `cpu` and `gpu` extras (they install the same module)."""
    from conftest import assert_one_sentence, kdforge_cli

    (tmp_path / "onnxruntime").mkdir()
    (tmp_path / "onnxruntime" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    from pathlib import Path

    demo = Path(__file__).parents[1] / "configs" / "digits_demo.yaml"
    out = kdforge_cli("run", demo, "--run-dir", tmp_path / "run", env={"PYTHONPATH": str(tmp_path)})
    assert_one_sentence(out, "install kdforge with pip install 'kdforge[cpu]', or 'kdforge[gpu]'")
    assert not (tmp_path / "run").exists()
