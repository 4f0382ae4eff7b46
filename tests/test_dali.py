"""`data.backend: dali`: DALI's CPU pipeline decodes the crops kdforge draws, as the PyTorch loader
does, trains a teacher end to end, and fails in one sentence where it cannot run."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import assert_one_sentence, kdforge_cli
from kdforge.config import DataConfig, TrainConfig
from kdforge.train.data import build_data
from kdforge.train.data.dali import DaliLoader
from kdforge.train.data.folder import ImageFolder
from kdforge.train.trainer import EpochBatches, train_loader
from test_data_pipeline import IMAGE_KINDS, _photo


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_dali_decodes_each_kind_of_image_to_the_pytorch_loaders_crop(tmp_path, kind):
    """Boxes under twice the output size (no DCT scaling on the PyTorch side): the two decoders
    and resamplers may round one level apart, nothing more."""
    path = IMAGE_KINDS[kind](tmp_path)
    data = ImageFolder([(path, 3)] * 8, 160, train=True, seed=5)
    batches = EpochBatches(data, TrainConfig(batch_size=8), seed=5, world=1)
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        (x, y), = list(DaliLoader(data, batches, 2, torch.device("cpu")))
        expected = torch.stack([data[key][0] for key in next(iter(batches))])
        assert x.shape == expected.shape == (8, 3, 160, 160) and x.dtype == torch.uint8 and y.tolist() == [3] * 8
        difference = (x.int() - expected.int()).abs()
        assert difference.max() <= 1 and difference.float().mean() < 0.3


def _folder(root, classes=("a", "b", "c"), per_class=8):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                image = np.clip(_photo(60, 70).astype(int) // (c + 1) + rng.integers(0, 30, (60, 70, 3)), 0, 255)
                Image.fromarray(image.astype(np.uint8)).save(root / split / name / f"{i}.jpg", quality=90)
    return root


def test_cross_task_labels_come_through_dali(tmp_path):
    config = DataConfig(name="folder", root=_folder(tmp_path / "f"), image_size=32, val_fraction=0.0, student_classes=[2, 0],
                        backend="dali")
    bundle = build_data(config, seed=0)
    batches = EpochBatches(bundle.train, TrainConfig(batch_size=5), seed=0, world=1)
    dali = list(train_loader(bundle.train, batches, 2, torch.device("cpu"), 0, backend="dali"))
    torch_batches = list(train_loader(bundle.train, batches, 0, torch.device("cpu"), 0))
    assert [len(y) for _, y in dali] == [len(y) for _, y in torch_batches] == [5, 5, 5]  # 16 images, the incomplete batch dropped as always
    for (x, y), (x_torch, y_torch) in zip(dali, torch_batches):
        assert torch.equal(y, y_torch) and set(y.tolist()) <= {0, 1}
        assert (x.int() - x_torch.int()).abs().max() <= 1


def _config(tmp_path, backend="dali", data="folder"):
    raw = {"name": "dali", "seed": 0, "run_dir": str(tmp_path / "run"),
           "data": {"name": data, "backend": backend, "image_size": 32, "val_fraction": 0.2, "num_workers": 2},
           "teacher": {"model": "resnet8", "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "log_every": 1}},
           "students": [{"name": "s", "method": "kd", "model": "resnet8"}]}
    if data == "folder":
        raw["data"]["root"] = str(_folder(tmp_path / "images"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "c.yaml"


def test_a_teacher_trains_end_to_end_on_dali(tmp_path):
    out = kdforge_cli("run", _config(tmp_path), "--only", "data", "--only", "teacher", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "teacher" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0 <= metrics["test_accuracy"] <= 1
    assert all(np.isfinite(epoch["loss"]) for epoch in metrics["history"])


def test_without_dali_installed_the_backend_is_refused_in_one_sentence(tmp_path):
    shadow = tmp_path / "shadow" / "nvidia"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")  # a regular package named nvidia hides the installed nvidia.dali
    out = kdforge_cli("run", _config(tmp_path), "--only", "data", "--only", "teacher", env={"PYTHONPATH": str(shadow.parent)})
    assert_one_sentence(out, "data.backend: dali needs NVIDIA DALI")


def test_dali_is_refused_for_in_memory_data(tmp_path):
    assert_one_sentence(kdforge_cli("run", _config(tmp_path, data="digits")), "data.backend dali decodes image files")


def test_a_file_dali_cannot_decode_is_named(tmp_path):
    root = _folder(tmp_path / "f", per_class=3)
    good = next((root / "train" / "a").glob("*.jpg"))
    (root / "train" / "a" / "broken.jpg").write_bytes(good.read_bytes()[:300])
    data = ImageFolder([(p, 0) for p in sorted((root / "train" / "a").glob("*.jpg"))], 32, train=True)
    batches = EpochBatches(data, TrainConfig(batch_size=4), seed=0, world=1)
    from kdforge.errors import UserError

    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        list(DaliLoader(data, batches, 2, torch.device("cpu")))


@pytest.mark.gpu
def test_dali_decodes_on_the_gpu_to_the_cpu_pipelines_crops(tmp_path):
    bundle = build_data(DataConfig(name="folder", root=_folder(tmp_path / "f"), image_size=32, val_fraction=0.0), seed=0)
    batches = EpochBatches(bundle.train, TrainConfig(batch_size=6), seed=0, world=1)
    gpu = list(DaliLoader(bundle.train, batches, 2, torch.device("cuda")))
    cpu = list(DaliLoader(bundle.train, batches, 2, torch.device("cpu")))
    for (x, y), (x_cpu, y_cpu) in zip(gpu, cpu, strict=True):
        assert x.is_cuda and torch.equal(y.cpu(), y_cpu)
        assert (x.cpu().int() - x_cpu.int()).abs().float().mean() < 2  # nvJPEG's IDCT is not libjpeg-turbo's
