"""CIFAR-10 / CIFAR-100 from their standard python-pickle folders
(cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta; cifar-100-python: train,
test, meta). The validation split is carved from the training batches with a seed; the
official test batch is the test split. Normalisation uses the training split's statistics;
augmentation (crop with padding 4, flip) is applied per batch by the trainer.

The batches are pickles, read by an unpickler that admits NumPy arrays and nothing else
(kdforge.untrusted), then checked key by key: uint8 images of 3x32x32, integer labels below the
class count, one label per image."""

from pathlib import Path

import numpy as np
import torch

from kdforge.errors import UserError
from kdforge.untrusted import load_numpy_pickle
from kdforge.train.data.splits import DataBundle, channel_stats, normalize, split_indices, tensor_dataset

_LAYOUT = {
    10: {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
         "labels": b"labels", "names": b"label_names"},
    100: {"train": ["train"], "test": ["test"], "meta": "meta", "labels": b"fine_labels", "names": b"fine_label_names"},
}


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    if not path.is_file():
        raise UserError(f"data.root: {path.parent} has no file '{path.name}'; point it at an extracted CIFAR python folder.")
    content = load_numpy_pickle(path, "data.root")
    missing = [k.decode() for k in keys if not isinstance(content, dict) or k not in content]
    if missing:
        raise UserError(f"data.root: {path} is not a CIFAR pickle file (no '{missing[0]}' entry).")
    return content


def _batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path, (b"data", label_key))
    data, labels = content[b"data"], content[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"data.root: {path} 'data' is not a uint8 array of 3072 values per image as CIFAR's are.")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"data.root: {path} '{label_key.decode()}' is not a list of integer labels.") from None
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise UserError(f"data.root: {path} '{label_key.decode()}' does not hold one label in [0, {num_classes}) per image.")
    return data, labels


def _read(root: Path, files: list[str], label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_batch(root / name, label_key, num_classes) for name in files]
    data = np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([y for _, y in batches])
    return torch.from_numpy(data).float() / 255.0, torch.from_numpy(labels).long()


def _class_names(path: Path, key: bytes, num_classes: int) -> list[str]:
    names = _unpickle(path, (key,))[key]
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, bytes) for n in names):
        raise UserError(f"data.root: {path} '{key.decode()}' is not a list of {num_classes} class names.")
    return [n.decode(errors="replace") for n in names]


def load(root: Path, num_classes: int, val_fraction: float, seed: int) -> DataBundle:
    layout = _LAYOUT[num_classes]
    if not Path(root).is_dir():
        raise UserError(f"data.root: folder {root} does not exist; download CIFAR-{num_classes} (python version) and extract it there.")
    root = Path(root)
    train_x, train_y = _read(root, layout["train"], layout["labels"], num_classes)
    test_x, test_y = _read(root, layout["test"], layout["labels"], num_classes)
    names = _class_names(root / layout["meta"], layout["names"], num_classes)
    rest, val = split_indices(len(train_y), val_fraction, seed)
    mean, std = channel_stats(train_x[rest])
    train_x, test_x = normalize(train_x, mean, std), normalize(test_x, mean, std)
    return DataBundle(
        tensor_dataset(train_x[rest], train_y[rest]), tensor_dataset(train_x[val], train_y[val]),
        tensor_dataset(test_x, test_y), num_classes, 3, 32, mean, std, names,
    )
