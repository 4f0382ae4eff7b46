import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from kdforge.config import DataConfig
from kdforge.errors import UserError
from kdforge.train.data import build_data
from kdforge.train.data.augment import random_crop_flip


def test_digits_split_is_deterministic_disjoint_and_normalised():
    a, b = build_data(DataConfig(), seed=0), build_data(DataConfig(), seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 180, 360)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    rows = lambda ds: {tuple(x.flatten().tolist()) for x in ds.tensors[0]}  # noqa: E731
    assert len(rows(a.train) & rows(a.test)) < 5  # the split is by index; a few digits images are exact duplicates
    mean = a.train.tensors[0].mean().item()
    assert abs(mean) < 1e-4 and a.num_classes == 10 and a.in_channels == 1 and a.image_size == 8


def _write_cifar(root, num_classes: int, n_train: int, n_test: int):
    rng = np.random.default_rng(0)
    label_key = b"labels" if num_classes == 10 else b"fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if num_classes == 10 else ["train"]
    def batch(n):
        return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, num_classes, n).tolist()}
    root.mkdir()
    for name in train_files:
        (root / name).write_bytes(pickle.dumps(batch(n_train)))
    (root / ("test_batch" if num_classes == 10 else "test")).write_bytes(pickle.dumps(batch(n_test)))
    names_key = b"label_names" if num_classes == 10 else b"fine_label_names"
    (root / ("batches.meta" if num_classes == 10 else "meta")).write_bytes(pickle.dumps({names_key: [f"c{i}".encode() for i in range(num_classes)]}))


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_pickle_folder(tmp_path, num_classes):
    root = tmp_path / "cifar"
    _write_cifar(root, num_classes, n_train=40, n_test=30)
    bundle = build_data(DataConfig(name=f"cifar{num_classes}", root=root, val_fraction=0.1), seed=0)
    files = 5 if num_classes == 10 else 1
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40 * files - 4 * files, 4 * files, 30)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < num_classes
    assert bundle.class_names[3] == "c3" and bundle.num_classes == num_classes


def test_cifar_missing_folder_and_corrupt_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_data(DataConfig(name="cifar10", root=tmp_path / "nope"), seed=0)
    root = tmp_path / "cifar"
    _write_cifar(root, 10, 10, 10)
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3 is not a readable pickle"):
        build_data(DataConfig(name="cifar10", root=root), seed=0)


def test_image_folder(tmp_path):
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((40, 50, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    bundle = build_data(DataConfig(name="folder", root=tmp_path, image_size=16, val_fraction=0.25), seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (9, 3, 4)
    assert bundle.class_names == ["cat", "dog"]
    x, y = bundle.train[(0, 0)]  # the training view: augmented, uint8, normalised on the device
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y in (0, 1)
    assert bundle.train[0][0].dtype == torch.float32  # by index: as evaluation sees it
    assert bundle.test[0][0].shape == (3, 16, 16)


def test_empty_image_folder_is_a_user_error(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        build_data(DataConfig(name="folder", root=tmp_path), seed=0)


def test_random_crop_flip_shifts_and_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = random_crop_flip(x, torch.rand(64, 3, generator=torch.Generator().manual_seed(0)), padding=1, hflip=True)
    assert out.shape == x.shape
    mirrored = x.flip(3)
    # every output is the padded input shifted by at most 1 pixel, possibly mirrored
    for img in out:
        assert any(torch.equal(img[0, 1:3, 1:3], ref[0, 1 + dy:3 + dy, 1 + dx:3 + dx])
                   for ref in (x[0], mirrored[0]) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert not torch.equal(out, x)


def test_no_validation_split_runs_every_stage(tmp_path):
    """data.val_fraction: 0 (the key's lower bound): training keeps the images, epochs report no
    validation accuracy, strip probes training images."""
    from conftest import run_tiny, tiny_config

    from kdforge.train.data import digits

    bundle = digits.load(0.0, 0.2, 0)
    assert len(bundle.val) == 0 and len(bundle.train) + len(bundle.test) == 1797
    out = run_tiny(tmp_path, tiny_config("unused")["students"][:1], data={"name": "digits", "val_fraction": 0})
    assert out.returncode == 0, out.stderr
    assert "1437/0/360 train/val/test" in out.stdout
