"""Watching a run: the within-epoch bar on a terminal, a line every train.log_every steps
elsewhere, and the scalars in metrics.jsonl and TensorBoard event files."""

import json

import pytest

from conftest import run_tiny, tiny_config
from kdforge.train.progress import TrainingLog


def _teacher(log_every: int) -> dict:
    return {"model": "resnet8", "train": {"epochs": 2, "batch_size": 128, "lr": 0.05, "log_every": log_every}}


@pytest.mark.parametrize("log_every", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_a_run_without_a_terminal_prints_a_line_every_log_every_steps_and_records_its_scalars(tmp_path, log_every):
    student = tiny_config("unused")["students"][0]
    out = run_tiny(tmp_path, [student], teacher=_teacher(log_every))
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "teacher"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "global_step" in r]
    per_epoch = steps[-1]["global_step"] // 2 + 1
    reads = 2 * (per_epoch // log_every + (per_epoch % log_every != 0))  # every log_every steps and at each epoch's end
    lines = [line for line in out.stdout.splitlines() if line.strip().startswith("teacher resnet8: epoch")]
    assert len(lines) == len(steps) == reads
    assert "img/s" in lines[0] and "stage ETA" in lines[0] and " ce " in lines[0] and "data " in lines[0]
    assert {"ce", "loss", "lr", "images_per_s", "data_wait_share", "epoch", "step"} <= steps[0].keys()
    epochs = [r for r in records if "global_step" not in r]
    assert [e["epoch"] for e in epochs] == [0, 1] and {"val_accuracy", "train_accuracy", "loss"} <= epochs[0].keys()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"step/loss", "step/ce", "step/lr", "step/images_per_s", "epoch/val_accuracy"} <= set(tags)
    assert len(events.Scalars("step/loss")) == len(steps)


def test_on_a_terminal_each_epoch_has_a_bar_with_loss_terms_throughput_and_the_stage_eta(tmp_path, capsys):
    log = TrainingLog(tmp_path, "teacher resnet8", epochs=2, steps_per_epoch=3, done_steps=0, done_epochs=0, log_every=1)
    log.interactive = True
    log.start_epoch(0, 0)
    for step in range(3):
        log.step(0, step, 1, {"ce": 1.5, "kd": 0.25}, 0.1, 64, 0.1)
    log.bar.refresh()
    log.end_epoch(0, {"loss": 1.75})
    log.close()
    bar = capsys.readouterr().err
    assert "teacher resnet8 1/2" in bar and "ce 1.500 kd 0.250" in bar and "img/s" in bar and "data 10%" in bar and "stage ETA" in bar
