"""Tensor data sets, deterministic splits and the per-channel statistics every loader shares."""

from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import Dataset, TensorDataset


@dataclass
class DataBundle:
    """The three splits and what a model needs to know about the data."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    class_names: list[str]
    classes: Optional[list[int]] = None  # the data set's class ids this bundle keeps (cross-task), else all

    def summary(self) -> dict:
        return {
            "num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size,
            "train": len(self.train), "val": len(self.val), "test": len(self.test),
            "mean": self.mean, "std": self.std, "class_names": self.class_names, "classes": self.classes,
        }


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of float images (N, C, H, W)."""
    return images.mean(dim=(0, 2, 3)).tolist(), images.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images - m) / s


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation cut into (rest, held_out) with `fraction` of n held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = int(round(n * fraction))
    return perm[held:], perm[:held]


def tensor_dataset(images: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    return TensorDataset(images.float().contiguous(), labels.long())
