"""The training loop every stage that trains shares.

SGD with momentum and weight decay, a step or cosine schedule (per epoch), a checkpoint
written atomically after every epoch with everything needed to resume (model, optimizer,
scheduler, RNG states, epoch, history), and a stop with one sentence on a NaN or infinite loss
that keeps the last good checkpoint. An interrupt (Ctrl-C, SIGTERM) leaves the last complete
epoch's checkpoint and says how many epochs it holds. A checkpoint is resumed only if it was written for the
same stage fingerprint, i.e. the same config and inputs.

Under torchrun the distiller is wrapped in DistributedDataParallel, each rank reads its share
of every epoch's batches (`batch_size` is the global batch), sums of losses and counts are
reduced across ranks, and rank 0 alone writes the checkpoint. Mixed precision (bf16/fp16
autocast, a gradient scaler for fp16) and channels-last are switches of the train config.
"""

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from kdforge import atomic
from kdforge.config import TrainConfig
from kdforge.errors import Interrupted, UserError
from kdforge.train import distributed
from kdforge.train.data import DataBundle
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
) -> TrainResult:
    """Trains `distiller` (its forward returns logits and a dict of losses) and evaluates its student."""
    seed_everything(seed)
    distiller.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    optimizer = make_optimizer(distiller, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    history, start_epoch = [], 0
    state = _load_resumable(checkpoint, fingerprint)
    if state is not None:
        distiller.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history, start_epoch = state["history"], state["epoch"] + 1

    loader_gen = torch.Generator().manual_seed(seed)
    world = distributed.world_size()
    model = DistributedDataParallel(distiller, find_unused_parameters=True) if world > 1 else distiller
    started = time.perf_counter()
    epochs = tqdm(range(start_epoch, cfg.epochs), desc=description, unit="epoch", leave=False,
                  disable=None if distributed.is_main() else True)
    saved = start_epoch
    try:
        for epoch in epochs:
            loader = _train_loader(data.train, cfg, seed, epoch, loader_gen, world)
            totals = _train_epoch(model, loader, optimizer, device, augment, epoch, cfg, checkpoint)
            scheduler.step()
            val_logits, val_labels = predict(distiller.student, data.val, device)
            totals["val_accuracy"] = accuracy(val_logits, val_labels)
            totals["epoch"] = epoch
            history.append(totals)
            epochs.set_postfix(loss=f"{totals['loss']:.3f}", val=f"{totals['val_accuracy']:.3f}")
            if distributed.is_main():
                atomic.save_torch(checkpoint, {
                    "fingerprint": fingerprint, "epoch": epoch, "complete": epoch == cfg.epochs - 1,
                    "model": distiller.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history,
                })
            saved = epoch + 1
            distributed.barrier()
    except KeyboardInterrupt as error:  # the checkpoint on disk is the last complete epoch's
        stop = Interrupted.of(error)
        stop.progress = f"{saved} of {cfg.epochs} epochs saved in {checkpoint}"
        raise stop from None

    test_logits, test_labels = predict(distiller.student, data.test, device)
    return TrainResult(
        val_accuracy=history[-1]["val_accuracy"] if history else float("nan"),
        test_accuracy=accuracy(test_logits, test_labels),
        history=history, resumed_from_epoch=start_epoch, seconds=time.perf_counter() - started,
    )


def _train_loader(dataset, cfg: TrainConfig, seed: int, epoch: int, generator: torch.Generator, world: int) -> DataLoader:
    """This epoch's batches: the same whether or not the run resumed, each rank its share."""
    drop_last = len(dataset) > cfg.batch_size
    if world > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=max(1, cfg.batch_size // world), sampler=sampler, drop_last=drop_last)
    generator.manual_seed(seed * 1000 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last, generator=generator)


def _train_epoch(model, loader, optimizer, device, augment, epoch: int, cfg: TrainConfig, checkpoint: Path) -> dict:
    model.train()
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    totals: dict[str, float] = {}
    seen = correct = 0
    steps = len(loader)
    for step, (x, y) in enumerate(loader):
        if augment is not None:
            x = augment(x)
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits, losses = model(x, y, progress=(epoch + step / steps) / cfg.epochs)
            loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            bad = next(k for k, v in losses.items() if not math.isfinite(v.item()))
            raise UserError(
                f"loss '{bad}' became {loss.item()} at epoch {epoch + 1}; the last good checkpoint is kept at "
                f"{checkpoint}; lower the learning rate or the loss weights."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v.item() * len(y)
        totals["loss"] = totals.get("loss", 0.0) + loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    keys = sorted(totals)
    reduced = distributed.all_reduce_sum([totals[k] for k in keys] + [correct, seen], device)
    seen = reduced[-1]
    result = {k: v / seen for k, v in zip(keys, reduced)}
    result["train_accuracy"] = reduced[-2] / seen
    result["lr"] = optimizer.param_groups[0]["lr"]
    return result


def _load_resumable(checkpoint: Path, fingerprint: str) -> Optional[dict]:
    if not checkpoint.is_file():
        return None
    state = load_torch(checkpoint, "training checkpoint")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return None
    return state
