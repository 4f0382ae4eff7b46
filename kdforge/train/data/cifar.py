"""CIFAR-10 / CIFAR-100 from their standard python-pickle folders
(cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta; cifar-100-python: train,
test, meta). The validation split is carved from the training batches with a seed; the
official test batch is the test split. Normalisation uses the training split's statistics;
augmentation (crop with padding 4, flip) is applied per batch by the trainer."""

import pickle
from pathlib import Path

import numpy as np
import torch

from kdforge.errors import UserError
from kdforge.train.data.splits import DataBundle, channel_stats, normalize, split_indices, tensor_dataset

_LAYOUT = {
    10: {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
         "labels": b"labels", "names": b"label_names"},
    100: {"train": ["train"], "test": ["test"], "meta": "meta", "labels": b"fine_labels", "names": b"fine_label_names"},
}


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"data.root: {path.parent} has no file '{path.name}'; point it at an extracted CIFAR python folder.")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"data.root: {path} is not a CIFAR pickle file ({type(e).__name__}).") from None


def _read(root: Path, files: list[str], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_unpickle(root / name) for name in files]
    data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
    return torch.from_numpy(data).float() / 255.0, torch.from_numpy(labels).long()


def load(root: Path, num_classes: int, val_fraction: float, seed: int) -> DataBundle:
    layout = _LAYOUT[num_classes]
    if not Path(root).is_dir():
        raise UserError(f"data.root: folder {root} does not exist; download CIFAR-{num_classes} (python version) and extract it there.")
    root = Path(root)
    train_x, train_y = _read(root, layout["train"], layout["labels"])
    test_x, test_y = _read(root, layout["test"], layout["labels"])
    names = [n.decode() for n in _unpickle(root / layout["meta"])[layout["names"]]]
    rest, val = split_indices(len(train_y), val_fraction, seed)
    mean, std = channel_stats(train_x[rest])
    train_x, test_x = normalize(train_x, mean, std), normalize(test_x, mean, std)
    return DataBundle(
        tensor_dataset(train_x[rest], train_y[rest]), tensor_dataset(train_x[val], train_y[val]),
        tensor_dataset(test_x, test_y), num_classes, 3, 32, mean, std, names,
    )
