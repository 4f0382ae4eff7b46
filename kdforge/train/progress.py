"""What a training stage shows and records while it runs.

The trainer reads its losses from the device every `train.log_every` steps; at each read:
- on a terminal, a bar per epoch with the loss terms, images/s, the share of time spent
  waiting for data and the stage's ETA (tqdm); under CI (`CI` set) or when stdout is not a
  terminal, one line with the same, so logs stay readable;
- in the stage's folder, `metrics.jsonl` gets a JSON record (the loss terms' means over those
  steps, lr, images/s, data-wait share; `global_step` the last step's number), and one per
  epoch (the epoch's means, train and validation accuracy); TensorBoard event files under
  `tensorboard/` get the same scalars (`step/...` and `epoch/...`).
A run resumed from a checkpoint first drops what was recorded after that checkpoint (from
metrics.jsonl, and from TensorBoard by purge_step), so both read as one uninterrupted run.
Only rank 0 of a torchrun job shows or records anything.
"""

import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingLog:
    def __init__(self, folder: Path, description: str, epochs: int, steps_per_epoch: int, done_steps: int, done_epochs: int,
                 log_every: int, enabled: bool = True):
        self.description, self.epochs, self.steps_per_epoch, self.log_every = description, epochs, steps_per_epoch, log_every
        self.enabled = enabled
        self.total, self.done = epochs * steps_per_epoch, done_steps
        self.interactive = sys.stdout.isatty() and not os.environ.get("CI")
        self.bar, self.writer, self.jsonl = None, None, Path(folder) / "metrics.jsonl"
        self._started, self._started_done = time.perf_counter(), done_steps
        if not enabled:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._keep_records_before(done_steps, done_epochs)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(folder) / "tensorboard"), purge_step=done_steps)

    def _keep_records_before(self, done_steps: int, done_epochs: int) -> None:
        """Drops records of steps and epochs after the checkpoint being resumed (and a line cut off by a kill)."""
        if not self.jsonl.is_file():
            return
        kept = []
        for line in self.jsonl.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ("global_step" in record and record["global_step"] < done_steps) or \
               ("global_step" not in record and record.get("epoch", done_epochs) < done_epochs):
                kept.append(line)
        self.jsonl.write_text("".join(f"{line}\n" for line in kept))

    def _record(self, record: dict, prefix: str, x: int) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("epoch", "step", "global_step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, x)

    def start_epoch(self, epoch: int, first_step: int) -> None:
        self._epoch_started, self._epoch_images, self._epoch_first = time.perf_counter(), 0, first_step
        if self.enabled and self.interactive:
            self.bar = tqdm(total=self.steps_per_epoch, initial=first_step, desc=f"{self.description} {epoch + 1}/{self.epochs}",
                            unit="step", leave=False, dynamic_ncols=True)

    def step(self, epoch: int, step: int, steps: int, losses: dict[str, float], lr: float, images: int, data_wait: float) -> None:
        """At a read after step `step` (0-based) of `epoch`: the mean loss terms over the last
        `steps` steps, which trained on `images` images (all ranks), `data_wait` the share of
        their time spent waiting for the loader."""
        self.done += steps
        self._epoch_images += images
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._epoch_started
        rate = self._epoch_images / elapsed if elapsed > 0 else 0.0
        stage_rate = (self.done - self._started_done) / max(time.perf_counter() - self._started, 1e-9)
        eta = (self.total - self.done) / stage_rate if stage_rate > 0 else 0.0
        self._record({"epoch": epoch, "step": step, "global_step": self.done - 1, "lr": lr, "images_per_s": rate,
                      "data_wait_share": data_wait, **losses}, "step", self.done - 1)
        terms = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
        status = f"{terms} | {rate:,.0f} img/s | data {data_wait:.0%} | stage ETA {_duration(eta)}"
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(steps)
        else:
            print(f"  {self.description}: epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps_per_epoch}: "
                  + status.replace(" | ", "; "), flush=True)

    def end_epoch(self, epoch: int, totals: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            self._record({"epoch": epoch, **totals}, "epoch", epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
