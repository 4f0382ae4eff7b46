"""scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes): the embedded
default data set, so the whole pipeline runs without a download. The split is stratified and
seeded, so every run of a config sees the same train/val/test images."""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kdforge.train.data.splits import DataBundle, channel_stats, normalize, tensor_dataset


def load(val_fraction: float, test_fraction: float, seed: int) -> DataBundle:
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    labels = torch.from_numpy(digits.target).long()
    idx = list(range(len(labels)))
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    train, val = rest, []  # data.val_fraction: 0, no validation split
    if val_fraction > 0:
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=labels[rest])
    mean, std = channel_stats(images[train])
    images = normalize(images, mean, std)

    def subset(ids):
        ids = torch.tensor(sorted(ids), dtype=torch.long)
        return tensor_dataset(images[ids], labels[ids])

    return DataBundle(subset(train), subset(val), subset(test), 10, 1, 8, mean, std, [str(d) for d in range(10)])
