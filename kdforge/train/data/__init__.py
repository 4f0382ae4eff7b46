"""Data sets by name: digits (embedded), cifar10/cifar100 (pickle folders), folder (ImageNet-style),
webdataset (tar shards written by `kdforge data pack`)."""

from functools import partial

from kdforge.config import DataConfig
from kdforge.train.data import cifar, digits, folder, shards
from kdforge.train.data.augment import random_crop_flip
from kdforge.train.data.splits import DataBundle
from kdforge.train.data.tasks import restrict, task_classes


def build_data(cfg: DataConfig, seed: int, task: str = "student") -> DataBundle:
    """The data of one task: "teacher" or "student" (the same unless the config is cross-task)."""
    if cfg.name == "digits":
        bundle = digits.load(cfg.val_fraction, cfg.test_fraction, seed)
    elif cfg.name in ("cifar10", "cifar100"):
        bundle = cifar.load(cfg.root, 10 if cfg.name == "cifar10" else 100, cfg.val_fraction, seed)
    elif cfg.name == "webdataset":
        bundle = shards.load(cfg.root, cfg.image_size, cfg.val_fraction, seed)
    else:
        bundle = folder.load(cfg.root, cfg.image_size, cfg.val_fraction, seed)
    teacher, student = task_classes(cfg, bundle.num_classes, seed)
    classes = teacher if task == "teacher" else student
    return restrict(bundle, classes) if classes is not None else bundle


def loader_workers(cfg: DataConfig) -> int:
    """Worker processes of the training loader: data.num_workers, else for image folders the
    cores this process may use (shared among the ranks on this machine), for in-memory tensors
    none (their batch augmentation is one gather in the training process)."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    if cfg.name not in ("folder", "webdataset"):
        return 0
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def batch_augmentation(cfg: DataConfig):
    """The per-batch augmentation of tensor data sets; folder data augment per image instead."""
    if cfg.name in ("folder", "webdataset"):
        return None
    return partial(random_crop_flip, padding=cfg.augment.crop_padding, hflip=cfg.augment.hflip)


__all__ = ["DataBundle", "batch_augmentation", "build_data", "loader_workers"]
