"""The training input pipeline: augmentation is a function of (seed, epoch, sample index), so an
epoch's batches are the same with any number of workers, epochs differ, and no two samples share
draws; image folders decode through JPEG draft mode and leave normalisation to the device."""

import numpy as np
import pytest
import torch
from PIL import Image

from kdforge.config import DataConfig, TrainConfig
from kdforge.train.data import build_data, loader_workers
from kdforge.train.data.randomness import sample_uniforms
from kdforge.train.trainer import EpochBatches, train_loader


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.jpg", quality=90)
    return root


def _epoch(bundle, workers: int, epoch: int) -> list[torch.Tensor]:
    batches = EpochBatches(bundle.train, TrainConfig(batch_size=5), seed=3, world=1)
    batches.set_epoch(epoch)
    loader = train_loader(bundle.train, batches, workers, torch.device("cpu"), seed=3)
    return [x for x, _ in loader]


def test_an_epochs_batches_are_the_same_with_0_2_and_3_workers_and_epochs_differ(jpeg_folder):
    bundle = build_data(DataConfig(name="folder", root=jpeg_folder, image_size=32, val_fraction=0.0), seed=0)
    runs = {workers: _epoch(bundle, workers, epoch=1) for workers in (0, 2, 3)}
    assert all(x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) for x in runs[0])
    for workers in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[workers], strict=True))
    other = _epoch(bundle, 0, epoch=2)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], other))
    again = _epoch(bundle, 2, epoch=1)  # a fresh loader (a resumed run) sees the same epoch
    assert all(torch.equal(a, b) for a, b in zip(runs[0], again, strict=True))


def test_no_two_samples_or_epochs_share_draws():
    draws = sample_uniforms(0, 5, np.arange(10_000), 41)
    assert len({row.tobytes() for row in draws}) == 10_000 and 0 <= draws.min() and draws.max() < 1
    assert not np.array_equal(draws, sample_uniforms(0, 6, np.arange(10_000), 41))
    assert not np.array_equal(draws, sample_uniforms(1, 5, np.arange(10_000), 41))
    assert abs(draws.mean() - 0.5) < 0.01  # uniform enough for crops and flips
    assert np.array_equal(draws[7:9], sample_uniforms(0, 5, [7, 8], 41))  # a sample's draws do not depend on its batch


def test_large_jpegs_decode_at_a_reduced_scale(tmp_path):
    from kdforge.train.data.folder import _drafted

    Image.fromarray(np.zeros((800, 1200, 3), np.uint8)).save(tmp_path / "big.jpg")
    with Image.open(tmp_path / "big.jpg") as img:
        drafted, box = _drafted(img, (0, 0, 800, 800), 224)  # 1/4 would leave the box 200 px: 1/2 is the smallest that covers 224
        assert drafted.size == (600, 400) and box == (0, 0, 400, 400)
    with Image.open(tmp_path / "big.jpg") as img:
        drafted, box = _drafted(img, (100, 100, 300, 300), 224)  # a crop smaller than the output: full scale
        assert drafted.size == (1200, 800) and box == (100, 100, 300, 300)


def test_the_default_worker_count_uses_the_cores_for_folders_only(monkeypatch):
    assert loader_workers(DataConfig()) == 0 and loader_workers(DataConfig(num_workers=3)) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers(DataConfig(name="folder", root=".")) >= 1
