"""Cross-task data: the teacher and the student classify different, possibly overlapping, class
sets (REFILLED's setting). A config names both sets, or an overlap ratio and a set size from which
both are drawn with the run's seed; each task then sees only its classes, relabelled 0..k-1 in
the order of its list."""

import random
from dataclasses import replace

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from kdforge.errors import UserError
from kdforge.train.data import shared_batches


def task_classes(cfg, num_classes: int, seed: int) -> tuple[list[int] | None, list[int] | None]:
    """(teacher classes, student classes), or (None, None) when both tasks use every class."""
    if cfg.overlap is not None:
        k = cfg.task_classes or num_classes // 2
        shared = round(cfg.overlap * k)
        if 2 * k - shared > num_classes:
            raise UserError(f"data.overlap={cfg.overlap} with data.task_classes={k} needs {2 * k - shared} classes; "
                            f"the data set has {num_classes}.")
        order = list(range(num_classes))
        random.Random(seed).shuffle(order)
        teacher = sorted(order[:k])
        student = sorted(order[:shared] + order[k:2 * k - shared])
        return teacher, student
    for key in ("teacher_classes", "student_classes"):
        bad = [c for c in getattr(cfg, key) or [] if not 0 <= c < num_classes]
        if bad:
            raise UserError(f"data.{key}: class {bad[0]} does not exist; the data set has classes 0..{num_classes - 1}.")
    return cfg.teacher_classes, cfg.student_classes


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]  # an empty split too
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples])
    raise TypeError(f"cannot read the labels of a {type(dataset).__name__}")


class Relabelled(Dataset):
    """The samples of `dataset` at `indices`, labels mapped through `mapping`."""

    def __init__(self, dataset: Dataset, indices: list[int], mapping: dict[int, int]):
        self.dataset, self.indices, self.mapping = dataset, indices, mapping
        self.labels = torch.tensor([mapping[int(y)] for y in dataset_labels(dataset)[indices]], dtype=torch.long)

    def __len__(self):
        return len(self.indices)

    @property
    def keyed(self) -> bool:
        return getattr(self.dataset, "keyed", False)

    @property
    def image_size(self):
        return getattr(self.dataset, "image_size", None)

    @property
    def device_normalization(self):
        return getattr(self.dataset, "device_normalization", None)

    def __getitem__(self, i):
        if isinstance(i, tuple):  # a training key (index, epoch) of a data set that augments per sample
            x, _ = self.dataset[(self.indices[i[0]], i[1])]
            return x, self.labels[i[0]]
        x, _ = self.dataset[self.indices[i]]
        return x, self.labels[i]

    def __getitems__(self, keys: list):
        """A training batch as the data set assembles it (keys (index, epoch)), else the samples one by one."""
        if keys and isinstance(keys[0], tuple) and hasattr(self.dataset, "__getitems__"):
            assembled = self.dataset.__getitems__([(self.indices[i], epoch) for i, epoch in keys])
            return shared_batches.relabelled(assembled, self.labels[[i for i, _ in keys]])
        return [self[key] for key in keys]

    def training_plan(self, keys: list[tuple[int, int]]):
        planned = self.dataset.training_plan([(self.indices[i], epoch) for i, epoch in keys])
        return [replace(p, label=int(self.labels[i])) for p, (i, _) in zip(planned, keys)]


def restrict(bundle, classes: list[int]):
    """The bundle with only `classes`, relabelled 0..len(classes)-1."""
    mapping = {c: i for i, c in enumerate(classes)}

    def keep(dataset):
        labels = dataset_labels(dataset)
        indices = [i for i, y in enumerate(labels.tolist()) if y in mapping]
        return Relabelled(dataset, indices, mapping)

    return replace(bundle, train=keep(bundle.train), val=keep(bundle.val), test=keep(bundle.test),
                   num_classes=len(classes), class_names=[bundle.class_names[c] for c in classes], classes=list(classes))
