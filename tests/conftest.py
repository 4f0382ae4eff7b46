import os
import subprocess
import sys

import pytest
import torch
import yaml

torch.set_num_threads(2)


def tiny_config(run_dir, **overrides) -> dict:
    """A complete config that runs every stage in seconds: digits, ResNet-8s, one epoch each."""
    train = {"epochs": 1, "batch_size": 128, "lr": 0.05}
    cfg = {
        "name": "tiny", "seed": 0, "run_dir": str(run_dir),
        "data": {"name": "digits"},
        "teacher": {"model": "resnet8", "train": dict(train)},
        "students": [
            {"name": "ce", "method": "ce", "model": "resnet8", "train": dict(train)},
            {"name": "kd", "method": "kd", "model": "resnet8", "options": {"temperature": 4.0}, "train": dict(train)},
            {"name": "ann", "method": "ce", "model": "resnet8_adder", "train": dict(train)},
        ],
        "profile": {"warmup": 1, "runs": 3},
    }
    cfg.update(overrides)
    return cfg


def run_python(code: str, **env) -> str:
    """Runs `code` in a fresh interpreter (extra environment variables from `env`); returns its
    stdout, failing the test with the child's stderr if it exits non-zero."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


@pytest.fixture
def write_config(tmp_path):
    def write(cfg: dict, name: str = "config.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write
