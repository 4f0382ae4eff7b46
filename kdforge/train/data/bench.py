"""`kdforge data bench CONFIG`: is the training input pipeline or the model the bottleneck?

Prints the training loader's images/s exactly as a run builds it (workers, decoding, crops; the
teacher's batch size, or the first student's), the single-core decode-only rate of the same
files (PIL opening and fully decoding each image, nothing else), and the ratio of the loader to
(cores x that rate): near or above 1, the loader keeps up with what the cores can decode (draft
decoding can take it past 1); far below, the loader is the bottleneck. In-memory data sets
(digits, CIFAR) have no files to decode: their loader rate alone is printed.
"""

import os
import time

from PIL import Image

from kdforge.config import Config
from kdforge.errors import UserError


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_rate(paths: list, seconds: float = 3.0) -> float:
    """Images per second that one core decodes fully (open + RGB), over up to `seconds`."""
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or done == 0:
        with Image.open(paths[done % len(paths)]) as img:
            img.convert("RGB").load()
        done += 1
    return done / (time.perf_counter() - started)


def loader_rate(cfg: Config, steps: int) -> tuple[float, int, int]:
    """(images/s, workers, batch size) of the training loader over `steps` batches after one warm-up batch."""
    import torch

    from kdforge.train.data import build_data, loader_workers
    from kdforge.train.trainer import EpochBatches, train_loader

    train = (cfg.teacher.train if cfg.teacher is not None else cfg.students[0].train).model_copy()
    data = build_data(cfg.data, cfg.seed)
    workers = loader_workers(cfg.data)
    batches = EpochBatches(data.train, train, cfg.seed, world=1)
    loader = iter(train_loader(data.train, batches, workers, torch.device("cpu"), cfg.seed))
    next(loader)
    started, images = time.perf_counter(), 0
    for _ in range(min(steps, len(batches) - 1)):
        x, _ = next(loader)
        images += len(x)
    return images / (time.perf_counter() - started), workers, train.batch_size


def bench(cfg: Config, steps: int) -> str:
    if steps < 1:
        raise UserError("--steps must be at least 1.")
    rate, workers, batch = loader_rate(cfg, steps)
    lines = [f"training loader: {rate:,.0f} images/s ({workers} worker(s), batch {batch}, {steps} batches)"]
    if cfg.data.name == "folder":
        from kdforge.train.data.folder import _scan

        train_dir = cfg.data.root / "train"
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        paths = [p for p, _ in _scan(train_dir, classes)]
        single, cores = decode_rate(paths), _cores()
        lines += [f"decode only, one core: {single:,.0f} images/s; x {cores} core(s) = {single * cores:,.0f} images/s",
                  f"loader / (cores x decode): {rate / (single * cores):.2f}"]
    return "\n".join(lines)
