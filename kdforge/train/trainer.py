"""The training loop every stage that trains shares.

SGD with momentum and weight decay, a step or cosine schedule (per epoch), a checkpoint
written atomically after every epoch and, within an epoch, every `train.checkpoint_minutes`,
with everything needed to continue exactly (model, optimizer, scheduler, gradient scaler, RNG
states, the position in the epoch with the epoch's sums so far, history), and a stop with one
sentence on a NaN or infinite loss that keeps the last good checkpoint. An epoch's batches are
a function of (seed, epoch) alone and the data loader draws nothing from the global RNG, so a
run killed anywhere (SIGKILL included) and resumed reaches the weights of an uninterrupted run.
An interrupt (Ctrl-C, SIGTERM) leaves the last checkpoint and says what it holds. A checkpoint is
resumed only if it was written for the same stage fingerprint, i.e. the same config and inputs.
Progress and scalars: kdforge.train.progress.

Under torchrun the distiller is wrapped in DistributedDataParallel, each rank reads its share
of every epoch's batches (`batch_size` is the global batch), sums of losses and counts are
reduced across ranks, and rank 0 alone writes the checkpoint. Mixed precision (bf16/fp16
autocast, a gradient scaler for fp16) and channels-last are switches of the train config.
"""

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from kdforge import atomic
from kdforge.config import TrainConfig
from kdforge.errors import Interrupted, UserError
from kdforge.train import distributed
from kdforge.train.data import DataBundle, shared_batches
from kdforge.train.data.augment import DRAWS as AUGMENT_DRAWS
from kdforge.train.data.randomness import sample_uniforms
from kdforge.train.progress import TrainingLog
from kdforge.train.threads import ThreadBudget, cpu_set, set_threads
from kdforge.untrusted import load_torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def make_optimizer(module: torch.nn.Module, cfg: TrainConfig):
    groups = module.parameter_groups() if hasattr(module, "parameter_groups") else [{"params": list(module.parameters())}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole split, the model in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        logits.append(model(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    if not logits:  # an empty split (data.val_fraction: 0)
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    history: list[dict]
    resumed_from_epoch: int
    seconds: float
    resumed_from_step: int = 0


@dataclass
class Position:
    """Where training stands: `step` batches of `epoch` done, with the sums of that epoch's loss
    terms, correct predictions and images so far (summed over ranks)."""
    epoch: int = 0
    step: int = 0
    partial: dict = field(default_factory=dict)


class TrainingState:
    """What a run trains and what resumes it: the distiller, its optimizer, schedule and loss
    scaler, the epoch history and the position, saved to and resumed from one checkpoint (of
    this run only: its fingerprint must match)."""

    def __init__(self, distiller: torch.nn.Module, cfg: TrainConfig, checkpoint: Path, fingerprint: str, device: torch.device):
        self.distiller, self.cfg, self.checkpoint, self.fingerprint = distiller, cfg, checkpoint, fingerprint
        self.optimizer = make_optimizer(distiller, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.history: list[dict] = []
        self.position = self.resumed = self.saved = Position()

    def resume(self) -> None:
        """Continues from the checkpoint where it is this run's; `resumed` says from where."""
        state = _load_resumable(self.checkpoint, self.fingerprint)
        if state is not None:
            self.distiller.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.history = state["history"]
            self.position = Position(**state["position"]) if "position" in state else Position(state["epoch"] + 1)
        self.resumed = self.saved = Position(self.position.epoch, self.position.step)

    def save(self, at: Position) -> None:
        if distributed.is_main():
            atomic.save_torch(self.checkpoint, {
                "fingerprint": self.fingerprint, "epoch": at.epoch - 1, "position": vars(at), "complete": at.epoch == self.cfg.epochs,
                "model": self.distiller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
                "history": self.history,
            })
        self.saved = Position(at.epoch, at.step)


def fit(
    distiller: torch.nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    checkpoint: Path,
    fingerprint: str,
    device: torch.device,
    seed: int,
    augment: Optional[Callable] = None,
    description: str = "train",
    workers: int = 0,
    backend: str = "torch",
) -> TrainResult:
    """Trains `distiller` (its forward returns logits and a dict of losses) and evaluates its
    student; `augment(images, uniforms)` is the batch augmentation of tensor data sets, `workers`
    the training loader's worker processes (DALI's threads with `backend` "dali")."""
    seed_everything(seed)
    distiller.epochs = cfg.epochs
    distiller.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    state = TrainingState(distiller, cfg, checkpoint, fingerprint, device)
    state.resume()
    position = state.position

    world = distributed.world_size()
    batches = EpochBatches(data.train, cfg, seed, world)
    loader = train_loader(data.train, batches, workers, device, seed, backend, borrowed=True)
    model = distiller
    if world > 1:
        model = DistributedDataParallel(distiller, find_unused_parameters=_has_unused_parameters(distiller, data.train, batches, device))
    started = time.perf_counter()
    steps = len(batches)
    log = TrainingLog(checkpoint.parent, description, cfg.epochs, steps, position.epoch * steps + position.step, position.epoch,
                      cfg.log_every, enabled=distributed.is_main())
    previous_threads = torch.get_num_threads()
    if device.type == "cpu" and cfg.threads != "auto":
        set_threads(len(cpu_set()) if cfg.threads == "all" else cfg.threads)
    run = EpochRun(state, torch.compile(model) if cfg.compile else model, device=device, augment=augment, seed=seed, log=log,
                   normalization=getattr(data.train, "device_normalization", None),
                   threads=ThreadBudget() if device.type == "cpu" and cfg.threads == "auto" else None)
    try:
        for epoch in range(position.epoch, cfg.epochs):
            first = position.step if epoch == position.epoch else 0
            partial = position.partial if epoch == position.epoch and distributed.is_main() else {}
            batches.set_epoch(epoch, first)
            distiller.train()
            totals = run.epoch(loader, batches, epoch, first, steps, partial)
            state.scheduler.step()
            totals["val_accuracy"] = accuracy(*predict(distiller.student, data.val, device))
            totals["epoch"] = epoch
            state.history.append(totals)
            log.end_epoch(epoch, totals)
            state.save(Position(epoch + 1))
            distributed.barrier()
    except KeyboardInterrupt as error:  # the checkpoint on disk is the last one saved
        stop, saved = Interrupted.of(error), state.saved
        within = f" and {saved.step} of {steps} steps of the next" if saved.step else ""
        stop.progress = f"{saved.epoch} of {cfg.epochs} epochs{within} saved in {checkpoint}"
        raise stop from None
    finally:
        log.close()
        set_threads(previous_threads)

    history = state.history
    return TrainResult(
        val_accuracy=history[-1]["val_accuracy"] if history else float("nan"),
        test_accuracy=accuracy(*predict(distiller.student, data.test, device)),
        history=history, resumed_from_epoch=state.resumed.epoch, seconds=time.perf_counter() - started,
        resumed_from_step=state.resumed.step,
    )


def _epoch_batches(dataset, cfg: TrainConfig, seed: int, epoch: int, world: int) -> list[list[int]]:
    """This rank's batches of this epoch, as lists of sample indices: a function of (seed, epoch)
    alone, so a run resumed mid-epoch skips exactly the batches it had trained on."""
    drop_last = len(dataset) > cfg.batch_size
    if world > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        order, size = list(sampler), max(1, cfg.batch_size // world)
    else:
        order, size = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist(), cfg.batch_size
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    return batches[:-1] if drop_last and len(batches[-1]) < size else batches


class EpochBatches:
    """The training loader's batch sampler: the current epoch's batches from `set_epoch`, as
    sample indices, or as (index, epoch) keys for data sets that augment each sample by its key
    (image folders). One object for the whole stage, so worker processes can persist."""

    def __init__(self, dataset, cfg: TrainConfig, seed: int, world: int):
        self.dataset, self.cfg, self.seed, self.world = dataset, cfg, seed, world
        self.keyed = getattr(dataset, "keyed", False)
        self.epoch, self.batches = 0, _epoch_batches(dataset, cfg, seed, 0, world)

    def set_epoch(self, epoch: int, first: int = 0) -> None:
        self.epoch, self.batches = epoch, _epoch_batches(self.dataset, self.cfg, self.seed, epoch, self.world)[first:]

    def __iter__(self):
        for batch in self.batches:
            yield [(i, self.epoch) for i in batch] if self.keyed else batch

    def __len__(self):
        return len(_epoch_batches(self.dataset, self.cfg, self.seed, 0, self.world))


def _collate(samples):
    """A batch a data set assembled itself (its `__getitems__` gave a tuple) as it is; else torch's stacking."""
    return samples if isinstance(samples, tuple) else default_collate(samples)


def train_loader(dataset, batches: "EpochBatches", workers: int, device: torch.device, seed: int, backend: str = "torch",
                 borrowed: bool = False):
    """The stage's training loader: `workers` persistent worker processes preparing
    shared_batches.PREFETCH batches each, pinned memory for a GPU, and its own generator (the
    global RNG stays the run's); with backend "dali", DALI with `workers` threads. `borrowed`:
    each batch is valid until the next is asked for (the training loop), else it may be kept."""
    if backend == "dali":
        from kdforge.train.data.dali import DaliLoader

        return DaliLoader(dataset, batches, workers, device)
    pinned = device.type == "cuda"
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pinned, persistent_workers=workers > 0,
                        prefetch_factor=shared_batches.PREFETCH if workers else None, collate_fn=_collate,
                        generator=torch.Generator().manual_seed(seed))
    if borrowed:
        return shared_batches.Borrowed(loader, pinned)
    return _Copied(loader)


class _Copied:
    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return (shared_batches.copied(batch) for batch in self.loader)


def _has_unused_parameters(distiller: torch.nn.Module, dataset, batches: EpochBatches, device: torch.device) -> bool:
    """Whether one training step leaves trainable parameters without a gradient (DDP must then
    search for them every step): probed on a copy, without touching the run's RNG."""
    keys = next(iter(batches))[:2]
    x, y = (torch.stack([torch.as_tensor(v) for v in column]) for column in zip(*(dataset[k] for k in keys)))
    norm = getattr(dataset, "device_normalization", None)
    x = _normalized(x.to(device), norm)
    probe = copy.deepcopy(distiller).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        _, losses = probe(x, y.to(device), progress=0.0)
        sum(losses.values()).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


def _normalized(x: torch.Tensor, normalization) -> torch.Tensor:
    """uint8 images from a loader that leaves normalisation to the device, as normalised floats."""
    if normalization is None:
        return x
    mean, std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in normalization)
    return (x.float() / 255 - mean) / std


class EpochRun:
    """One epoch of steps. Loss sums stay on the device and are read every `train.log_every`
    steps (and at the epoch's end): progress, metrics.jsonl, the non-finite check and the
    time-based checkpoint happen at those reads, so a GPU waits for the host only there."""

    def __init__(self, state: TrainingState, step_fn, *, device: torch.device, augment: Optional[Callable], seed: int,
                 log: TrainingLog, normalization, threads: Optional[ThreadBudget] = None):
        """`step_fn` is the distiller as it runs a step (wrapped for DDP, compiled); `state` owns what it updates and saves."""
        self.state, self.step_fn, self.device, self.augment, self.seed = state, step_fn, device, augment, seed
        self.cfg, self.optimizer, self.scaler = state.cfg, state.optimizer, state.scaler
        self.log, self.normalization, self.threads = log, normalization, threads

    def _check_finite(self, window: dict[str, float], epoch: int) -> None:
        bad = [k for k, v in window.items() if not math.isfinite(v)]
        if bad:
            raise UserError(
                f"loss '{bad[0]}' became {window[bad[0]]} at epoch {epoch + 1}; the last good checkpoint is kept at "
                f"{self.state.checkpoint}; lower the learning rate or the loss weights."
            )

    def epoch(self, loader, batches: EpochBatches, epoch: int, first: int, steps: int, partial: dict) -> dict:
        cfg, device, world = self.cfg, self.device, distributed.world_size()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        sums: dict[str, torch.Tensor] = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in partial.items()}
        window: dict[str, torch.Tensor] = {}
        window_steps = window_images = 0
        waited, window_started, last_save = 0.0, time.perf_counter(), time.monotonic()
        self.log.start_epoch(epoch, first)
        indices = iter(batches.batches)
        fetch_started = time.perf_counter()
        for step, (x, y) in enumerate(loader, start=first):
            waited += time.perf_counter() - fetch_started
            batch_indices = next(indices)
            if self.augment is not None:
                x = self.augment(x, torch.from_numpy(sample_uniforms(self.seed, epoch, batch_indices, AUGMENT_DRAWS)).float())
            x = _normalized(x.to(device, non_blocking=True), self.normalization).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            if self.threads is not None:
                self.threads.update()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, losses = self.step_fn(x, y, progress=(epoch + step / steps) / cfg.epochs)
                loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = len(y)
            for k, v in [*losses.items(), ("loss", loss)]:
                v = v.detach().double()
                sums[k] = sums.get(k, 0.0) + v * n
                window[k] = window.get(k, 0.0) + v
            sums["correct"] = sums.get("correct", 0.0) + (logits.argmax(1) == y).sum().double()
            sums["seen"] = sums.get("seen", 0.0) + n
            window_steps, window_images = window_steps + 1, window_images + n * world
            if (step + 1 - first) % cfg.log_every == 0 or step + 1 == steps:
                values = {k: float(v) / window_steps for k, v in window.items()}  # the one read of the device
                self._check_finite(values, epoch)
                elapsed = time.perf_counter() - window_started
                self.log.step(epoch, step, window_steps, values, self.optimizer.param_groups[0]["lr"], window_images,
                              waited / elapsed if elapsed > 0 else 0.0)
                window, window_steps, window_images, waited, window_started = {}, 0, 0, 0.0, time.perf_counter()
                if step + 1 < steps and _save_due(last_save, cfg, device):
                    keys = sorted(sums)
                    self.state.save(Position(epoch, step + 1, dict(zip(keys, distributed.all_reduce_sum([float(sums[k]) for k in keys], device)))))
                    last_save = time.monotonic()
            fetch_started = time.perf_counter()
        keys = sorted(k for k in sums if k not in ("correct", "seen")) + ["correct", "seen"]
        reduced = dict(zip(keys, distributed.all_reduce_sum([float(sums.get(k, 0.0)) for k in keys], device)))
        seen = reduced.pop("seen")
        result = {k: v / seen for k, v in reduced.items() if k != "correct"}
        result["train_accuracy"] = reduced["correct"] / seen
        result["lr"] = self.optimizer.param_groups[0]["lr"]
        return result


def _save_due(last: float, cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the time-based checkpoint is due; rank 0's clock decides for every rank."""
    due = time.monotonic() - last >= cfg.checkpoint_minutes * 60
    if distributed.world_size() > 1:
        return distributed.all_reduce_sum([1.0 if due and distributed.is_main() else 0.0], device)[0] > 0
    return due


def _load_resumable(checkpoint: Path, fingerprint: str) -> Optional[dict]:
    if not checkpoint.is_file():
        return None
    state = load_torch(checkpoint, "training checkpoint")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return None
    return state
