"""`kdforge data bench CONFIG`: is the training input pipeline or the model the bottleneck?

Prints the single-core decode-only rate of the training files (reading and fully decoding each
image to RGB through kdforge.train.data.images, nothing else), then the training loader's images/s exactly as a run builds it (workers,
decoding, crops; the teacher's batch size, or the first student's) for each backend that is
installed (the PyTorch loader, DALI), each with its ratio to (cores x the decode-only rate): near
or above 1, the loader keeps up with what the cores can decode (cropped and scaled decoding take
it past 1); far below, the loader is the bottleneck. Last, where the PyTorch loader's time goes:
each stage's time per image on one core, and what the loader loses beyond their sum (transfer
between processes, collation, the training process's share of the cores). In-memory data sets
(digits, CIFAR) have no files to decode: their loader rate alone is printed.
"""

import os
import time

from kdforge.config import Config
from kdforge.errors import UserError


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_rate(paths: list, seconds: float = 3.0) -> float:
    """Images per second that one core reads and decodes fully to RGB (the guarded decoder the
    loader uses), over up to `seconds`."""
    from kdforge.safe_files import read_bytes
    from kdforge.train.data.folder import MAX_IMAGE_BYTES
    from kdforge.train.data.images import decode_rgb

    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or done == 0:
        path = paths[done % len(paths)]
        decode_rgb(str(path), read_bytes(path, "data.root: image", MAX_IMAGE_BYTES))
        done += 1
    return done / (time.perf_counter() - started)


def _installed_backends(cfg: Config) -> list[str]:
    if cfg.data.name not in ("folder", "webdataset"):
        return ["torch"]
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return ["torch"]
    return ["torch", "dali"]


def _train_config(cfg: Config):
    return (cfg.teacher.train if cfg.teacher is not None else cfg.students[0].train).model_copy()


def loader_rate(cfg: Config, steps: int, backend: str) -> tuple[float, int, int]:
    """(images/s, workers or threads, batch size) of the training loader over `steps` batches after one
    warm-up batch."""
    import torch

    from kdforge.train.data import build_data, loader_workers
    from kdforge.train.trainer import EpochBatches, train_loader

    train = _train_config(cfg)
    data = build_data(cfg.data, cfg.seed)
    workers = loader_workers(cfg.data)
    batches = EpochBatches(data.train, train, cfg.seed, world=1)
    loader = iter(train_loader(data.train, batches, workers, torch.device("cpu"), cfg.seed, backend, borrowed=True))
    warm = len(batches) > 1  # a training set of one batch is timed warm-up included
    if warm:
        next(loader)
    started, images = time.perf_counter(), 0
    for _ in range(min(steps, len(batches) - 1) if warm else 1):
        x, _ = next(loader)
        images += len(x)
    rate = images / (time.perf_counter() - started)
    del loader  # its workers stop before anything else is timed
    return rate, workers, train.batch_size


def stage_times(cfg: Config, images: int = 256) -> dict[str, float]:
    """Microseconds per image of each stage of the PyTorch loader's decoding, in this process."""
    from kdforge.train.data import build_data
    from kdforge.train.data.crops import Stopwatch

    data = build_data(cfg.data, cfg.seed).train
    while hasattr(data, "dataset"):  # a cross-task subset: time the images underneath
        data = data.dataset
    batch = _train_config(cfg).batch_size
    keys = [(i, 0) for i in range(min(images, len(data)))]
    watch = Stopwatch()
    for start in range(0, len(keys), batch):
        data.views.batch(keys[start:start + batch], watch)
        watch.lap("collation")
    return {stage: seconds / len(keys) * 1e6 for stage, seconds in watch.seconds.items()}


def _training_files(cfg: Config) -> list:
    from kdforge.train.data.folder import _scan

    train_dir = cfg.data.root / "train"
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    return [p for p, _ in _scan(train_dir, classes)]


def bench(cfg: Config, steps: int) -> str:
    if steps < 1:
        raise UserError("--steps must be at least 1.")
    files = _training_files(cfg) if cfg.data.name == "folder" else None
    decoded = [decode_rate(files)] if files else []
    rates = {backend: loader_rate(cfg, steps, backend) for backend in _installed_backends(cfg)}
    lines, limit = [], None
    if files:  # decoded before and after the loaders: a drift of the machine's speed during the run averages out
        single, cores = (decoded[0] + decode_rate(files)) / 2, _cores()
        limit = single * cores
        lines.append(f"decode only, one core: {single:,.0f} images/s; x {cores} core(s) = {limit:,.0f} images/s")
    for backend, (rate, workers, batch) in rates.items():
        unit = "worker(s)" if backend == "torch" else "thread(s)"
        ratio = f"; loader / (cores x decode): {rate / limit:.2f}" if limit else ""
        lines.append(f"training loader ({backend}): {rate:,.0f} images/s ({workers} {unit}, batch {batch}, {steps} batches){ratio}")
    if files:
        stages = stage_times(cfg)
        per_image, loader_us = sum(stages.values()), cores * 1e6 / rates["torch"][0]
        lost = max(loader_us - per_image, 0)
        lines.append("where an image's time goes in the torch loader, per image on one core: "
                     + ", ".join(f"{stage} {us:,.0f} us" for stage, us in stages.items())
                     + f" = {per_image:,.0f} us; in the loader {cores} core(s) x {loader_us / cores:,.0f} us = {loader_us:,.0f} us, "
                     f"{lost:,.0f} us ({lost / loader_us:.0%}) in transfer, the training process and waiting for a core.")
    return "\n".join(lines)
