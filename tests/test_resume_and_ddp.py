"""Nothing lost and scaling out: a run killed with SIGKILL resumes to the same model, and two CPU
processes under torchrun train one consistent model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import tiny_config
from kdforge.config import DataConfig
from kdforge.train.data import build_data
from kdforge.train.models import create_model
from kdforge.train.trainer import accuracy, predict
from kdforge.untrusted import load_torch


def _teacher_only_config(tmp_path, name: str, epochs: int, **train) -> str:
    raw = tiny_config(tmp_path / name)
    raw["teacher"] = {"model": "resnet14", "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, **train}}
    raw["students"] = raw["students"][:1]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _command(config: str) -> list[str]:
    return [sys.executable, "-m", "kdforge", "run", config, "--only", "data", "--only", "teacher"]


def _checkpoint_epoch(path) -> int:
    try:
        return load_torch(path, "checkpoint")["epoch"]
    except Exception:
        return -1


@pytest.mark.slow  # two 8-epoch runs, one killed (2 min); test_shared_runs' Ctrl-C test covers the checkpoint in make test
def test_a_run_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    epochs = 8
    killed = _teacher_only_config(tmp_path, "killed", epochs)
    proc = subprocess.Popen(_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "teacher" / "checkpoint.pt"
    deadline = time.time() + 120
    while _checkpoint_epoch(checkpoint) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = _checkpoint_epoch(checkpoint)
    assert 1 <= done_before_kill < epochs - 1, "the kill must land mid-training"

    resumed = subprocess.run(_command(killed), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at epoch {done_before_kill + 2}" in resumed.stdout
    reference = subprocess.run(_command(_teacher_only_config(tmp_path, "reference", epochs)), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    a = json.loads((tmp_path / "killed" / "teacher" / "metrics.json").read_text())
    b = json.loads((tmp_path / "reference" / "teacher" / "metrics.json").read_text())
    assert a["resumed_from_epoch"] == done_before_kill + 1 and b["resumed_from_epoch"] == 0
    assert a["test_accuracy"] == b["test_accuracy"]
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-5)


def _position(path):
    try:
        return load_torch(path, "checkpoint").get("position")
    except Exception:
        return None


def _weights(path) -> dict:
    return load_torch(path, "checkpoint")["model"]


@pytest.mark.slow  # 21 s; the mid-epoch resume beside it covers the same path by step count
def test_a_run_killed_within_an_epoch_resumes_from_the_time_based_checkpoint_to_the_same_weights(tmp_path):
    """train.checkpoint_minutes: 0 saves after every step; a SIGKILL in the middle of epoch 2
    loses at most one step, and the resumed run ends with exactly the weights of an uninterrupted
    one, its metrics.jsonl holding every step once."""
    killed = _teacher_only_config(tmp_path, "killed", 3, checkpoint_minutes=0, log_every=1)
    proc = subprocess.Popen(_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "teacher" / "checkpoint.pt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        position = _position(checkpoint)
        if position and position["epoch"] == 1 and position["step"] >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    position = _position(checkpoint)
    assert position["epoch"] == 1 and position["step"] >= 3, "the kill must land within epoch 2"

    resumed = subprocess.run(_command(killed), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at epoch 2, step {position['step'] + 1}" in resumed.stdout
    reference = subprocess.run(_command(_teacher_only_config(tmp_path, "reference", 3, log_every=1)), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    a, b = _weights(checkpoint), _weights(tmp_path / "reference" / "teacher" / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line) for line in (tmp_path / "killed" / "teacher" / "metrics.jsonl").read_text().splitlines()]
    step_ids = [r["global_step"] for r in steps if "global_step" in r]
    assert step_ids == list(range(len(step_ids))) and len([r for r in steps if "global_step" not in r]) == 3
    history = [json.loads((tmp_path / run / "teacher" / "metrics.json").read_text())["history"] for run in ("killed", "reference")]
    assert history[0] == history[1]


@pytest.mark.parametrize("checkpoint_minutes", [pytest.param(10, marks=pytest.mark.slow), 0], ids=["epoch checkpoints", "a checkpoint every step"])
def test_two_cpu_processes_train_one_consistent_model(tmp_path, checkpoint_minutes):
    """With a checkpoint every step, rank 0's decision and the epoch's partial sums go through
    the process group; the run must still agree with its checkpoint."""
    config = _teacher_only_config(tmp_path, "ddp", 2, checkpoint_minutes=checkpoint_minutes, log_every=1)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "kdforge", "run", config, "--only", "data", "--only", "teacher"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[teacher]") == 1  # rank 0 alone reports and writes
    folder = tmp_path / "ddp" / "teacher"
    metrics = json.loads((folder / "metrics.json").read_text())
    state = load_torch(folder / "checkpoint.pt", "checkpoint")
    assert state["epoch"] == 1 and state["complete"]
    model = create_model("resnet14", 10, 1)
    model.load_state_dict({k[len("student."):]: v for k, v in state["model"].items() if k.startswith("student.")})
    data = build_data(DataConfig(), seed=0)
    assert accuracy(*predict(model, data.test, torch.device("cpu"))) == pytest.approx(metrics["test_accuracy"])
    assert len(metrics["history"]) == 2 and all(h["train_accuracy"] > 0 for h in metrics["history"])
