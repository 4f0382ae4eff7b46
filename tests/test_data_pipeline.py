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


def test_large_jpegs_decode_at_a_reduced_scale_and_match_a_full_decode(tmp_path):
    from kdforge.train.data.folder import ImageFolder, reduction

    assert reduction((0, 0, 800, 800), 224) == 2  # 1/4 would leave the box 200 px
    assert reduction((0, 0, 1800, 1900), 224) == 8 and reduction((100, 100, 300, 300), 224) == 1
    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([(xx // 7) % 256, (yy // 5) % 256, ((xx + yy) // 9) % 256], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "big.png")
    jpeg, png = (ImageFolder([(tmp_path / name, 0)], 64, train=True) for name in ("big.jpg", "big.png"))
    for epoch in range(4):  # the scaled JPEG decode (OpenCV) and the full PNG decode (PIL) give the same crop
        a, b = jpeg[(0, epoch)][0].float(), png[(0, epoch)][0].float()
        assert a.shape == b.shape == (3, 64, 64) and (a - b).abs().mean() < 12


def test_the_default_worker_count_uses_the_cores_for_folders_only(monkeypatch):
    assert loader_workers(DataConfig()) == 0 and loader_workers(DataConfig(num_workers=3)) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers(DataConfig(name="folder", root=".")) >= 1


def test_data_bench_prints_the_loader_rate_the_decode_limit_and_their_ratio(tmp_path, jpeg_folder):
    import yaml

    from conftest import assert_one_sentence, kdforge_cli

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "bench", "data": {"name": "folder", "root": str(jpeg_folder), "image_size": 32, "val_fraction": 0.0},
        "students": [{"name": "s", "method": "ce", "model": "resnet8", "train": {"batch_size": 4}}]}))
    out = kdforge_cli("data", "bench", config, "--steps", "3", "--set", "data.num_workers=2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("training loader:") and "(2 worker(s), batch 4, 3 batches)" in lines[0]
    assert "decode only, one core" in lines[1] and float(lines[2].rsplit(" ", 1)[1]) > 0
    assert_one_sentence(kdforge_cli("data", "bench", config, "--steps", "0"), "--steps must be at least 1")


def _pack(jpeg_folder, out, shard_size=5):
    from conftest import kdforge_cli

    packed = kdforge_cli("data", "pack", jpeg_folder, out, "--shard-size", str(shard_size))
    assert packed.returncode == 0, packed.stderr
    return packed


def test_packed_shards_give_the_folders_images_and_batches(tmp_path, jpeg_folder):
    out = _pack(jpeg_folder, tmp_path / "shards")
    assert "train 5 shard(s), 24 images; test 2 shard(s), 6 images; 2 classes" in out.stdout
    folder = build_data(DataConfig(name="folder", root=jpeg_folder, image_size=32, val_fraction=0.25), seed=0)
    shards = build_data(DataConfig(name="webdataset", root=tmp_path / "shards", image_size=32, val_fraction=0.25), seed=0)
    assert (len(shards.train), len(shards.val), len(shards.test)) == (len(folder.train), len(folder.val), len(folder.test))
    for split in ("train", "val", "test"):  # the same images in the same order, by index as evaluation sees them
        a, b = getattr(folder, split), getattr(shards, split)
        assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(len(a)))
    assert all(torch.equal(a, b) for a, b in zip(_epoch(folder, 0, 1), _epoch(shards, 2, 1), strict=True))


def test_an_index_that_names_anything_but_a_shard_file_is_refused(tmp_path, jpeg_folder):
    import json

    from conftest import assert_one_sentence, run_tiny

    _pack(jpeg_folder, tmp_path / "shards")
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    index["splits"]["train"][0]["url"] = "pipe:touch " + str(tmp_path / "MARKER")
    (tmp_path / "shards" / "index.json").write_text(json.dumps(index))
    out = run_tiny(tmp_path, [{"name": "s", "method": "ce", "model": "resnet8", "train": {"epochs": 1}}],
                   data={"name": "webdataset", "root": str(tmp_path / "shards"), "image_size": 16}, teacher=None)
    assert_one_sentence(out, "index.json is malformed (shard 'pipe:touch")
    assert not (tmp_path / "MARKER").exists()


def test_two_processes_under_torchrun_see_every_training_sample_once_per_epoch(tmp_path, jpeg_folder):
    import subprocess
    import sys

    _pack(jpeg_folder, tmp_path / "shards")
    script = tmp_path / "ranks.py"
    script.write_text(f"""
import json, os, torch, torch.distributed as dist
from kdforge.config import DataConfig, TrainConfig
from kdforge.train.data import build_data
from kdforge.train.trainer import EpochBatches, train_loader
dist.init_process_group("gloo")
data = build_data(DataConfig(name="webdataset", root={str(tmp_path / 'shards')!r}, image_size=16, val_fraction=0.0), seed=0)
batches = EpochBatches(data.train, TrainConfig(batch_size=4), seed=0, world=dist.get_world_size())
loader = train_loader(data.train, batches, 2, torch.device("cpu"), seed=0)
seen = {{}}
for epoch in (0, 1):
    batches.set_epoch(epoch)
    keys = [k for b in batches for k, _ in b]
    n = sum(len(x) for x, _ in loader)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, keys)
    seen[epoch] = (sorted(k for g in gathered for k in g), n)
if dist.get_rank() == 0:
    print(json.dumps({{"size": len(data.train), "seen": seen}}))
""")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    for epoch, (keys, loaded) in result["seen"].items():
        assert keys == list(range(result["size"])) and loaded == result["size"] // 2  # each rank loads its half


def test_a_teacher_trains_from_packed_shards_under_torchrun(tmp_path, jpeg_folder):
    import json
    import subprocess
    import sys

    import yaml

    _pack(jpeg_folder, tmp_path / "shards")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "shards", "seed": 0, "run_dir": str(tmp_path / "run"),
        "data": {"name": "webdataset", "root": str(tmp_path / "shards"), "image_size": 16, "val_fraction": 0.2, "num_workers": 1},
        "teacher": {"model": "resnet8", "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "log_every": 1}},
        "students": [{"name": "s", "method": "kd", "model": "resnet8"}]}))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "kdforge", "run", str(config), "--only", "data", "--only", "teacher"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "teacher" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0 <= metrics["test_accuracy"] <= 1
