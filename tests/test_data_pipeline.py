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
    from kdforge.train.data.crops import reduction
    from kdforge.train.data.folder import ImageFolder

    assert reduction((0, 0, 800, 800), 224) == 2  # 1/4 would leave the box 200 px
    assert reduction((0, 0, 1800, 1900), 224) == 8 and reduction((100, 100, 300, 300), 224) == 1
    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([(xx // 7) % 256, (yy // 5) % 256, ((xx + yy) // 9) % 256], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "big.png")
    jpeg, png = (ImageFolder([(tmp_path / name, 0)], 64, train=True) for name in ("big.jpg", "big.png"))
    for epoch in range(4):  # the scaled JPEG decode (libjpeg-turbo) and the full PNG decode (PIL) give the same crop
        a, b = jpeg[(0, epoch)][0].float(), png[(0, epoch)][0].float()
        assert a.shape == b.shape == (3, 64, 64) and (a - b).abs().mean() < 12


def _photo(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx * 3) % 256, (yy * 2) % 256, ((xx + yy) * 5 // 3) % 256], -1).astype(np.uint8)


def _saved(tmp_path, name: str, image: Image.Image, **options):
    image.save(tmp_path / name, **options)
    return tmp_path / name


IMAGE_KINDS = {  # how users' folders hold their images: each goes through libjpeg-turbo or through PIL
    "jpeg-420": lambda d: _saved(d, "a.jpg", Image.fromarray(_photo(300, 410)), quality=90),
    "jpeg-444-progressive": lambda d: _saved(d, "a.jpg", Image.fromarray(_photo(333, 250)), quality=95, subsampling=0, progressive=True),
    "jpeg-grey": lambda d: _saved(d, "a.jpg", Image.fromarray(_photo(280, 300)[..., 0]), quality=90),
    "jpeg-cmyk": lambda d: _saved(d, "a.jpg", Image.fromarray(_photo(260, 300)).convert("CMYK"), quality=95),
    "png-named-jpg": lambda d: _saved(d, "a.jpg", Image.fromarray(_photo(300, 310)), format="PNG"),
    "webp": lambda d: _saved(d, "a.webp", Image.fromarray(_photo(240, 320)), lossless=True),
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_a_training_batch_holds_each_images_crop_as_a_full_pil_decode_gives_it(tmp_path, kind):
    """The batch path (header, decode into a buffer, crop view, resize, flip) against the plain
    recipe written out here: PIL decodes the whole image, the drawn box is cut and resized, and
    flipped where the last draw says so."""
    import cv2

    from kdforge.train.data.crops import DRAWS, crop_box
    from kdforge.train.data.folder import ImageFolder

    path = IMAGE_KINDS[kind](tmp_path)
    data = ImageFolder([(path, 4)] * 6, 160, train=True, seed=7)  # over half the short side: no reduced-scale decoding
    keys = [(i, epoch) for i in range(6) for epoch in (0, 1)]
    images, labels = data.__getitems__(keys)
    assert images.shape == (12, 3, 160, 160) and images.dtype == torch.uint8 and labels.tolist() == [4] * 12
    whole = np.asarray(Image.open(path).convert("RGB"))
    flips = 0
    for row, (index, epoch) in enumerate(keys):
        u = sample_uniforms(7, epoch, [index], DRAWS)[0]
        left, top, right, bottom = crop_box(whole.shape[1], whole.shape[0], u)
        expected = cv2.resize(whole[top:bottom, left:right], (160, 160), interpolation=cv2.INTER_LINEAR)
        if u[-1] < 0.5:
            expected, flips = expected[:, ::-1], flips + 1
        got = images[row].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(got - expected).mean() < 1.5, (kind, row)  # two libjpeg-turbo builds may round a few pixels apart
        assert torch.equal(data[(index, epoch)][0], images[row])
    assert 0 < flips < 12


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20, "half", "bomb"],
                         ids=["empty", "text", "header-only", "truncated", "30000x30000-header"])
def test_a_broken_training_image_is_named_in_one_sentence(tmp_path, content):
    from kdforge.errors import UserError
    from kdforge.train.data.folder import ImageFolder

    good = _saved(tmp_path, "good.jpg", Image.fromarray(_photo(200, 220)), quality=90)
    if content == "half":
        content = good.read_bytes()[:len(good.read_bytes()) // 2]
    if content == "bomb":  # a small file whose frame header claims 900 megapixels
        content = bytearray(good.read_bytes())
        frame = content.index(b"\xff\xc0")
        content[frame + 5:frame + 9] = (30000).to_bytes(2, "big") * 2
        content = bytes(content)
    (tmp_path / "broken.jpg").write_bytes(content)
    data = ImageFolder([(good, 0), (tmp_path / "broken.jpg", 1)], 32, train=True)
    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        data.__getitems__([(0, 0), (1, 0)])


def test_reused_shared_memory_slots_never_change_a_batch_its_consumer_holds(tmp_path):
    """One worker, 20 batches, 6 slots: the training loop's borrowed batches are right while it
    holds them, and batches a consumer keeps (the default loader copies them out) stay right."""
    from kdforge.train.data.folder import ImageFolder

    rng = np.random.default_rng(1)
    paths = []
    for i in range(40):
        paths.append(_saved(tmp_path, f"{i}.jpg", Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)), quality=90))
    data = ImageFolder([(p, i % 3) for i, p in enumerate(paths)], 24, train=True, seed=2)
    batches = EpochBatches(data, TrainConfig(batch_size=2), seed=2, world=1)
    expected = [torch.stack([data[key][0] for key in keys]) for keys in batches]
    borrowed = train_loader(data, batches, 1, torch.device("cpu"), seed=2, borrowed=True)
    for (x, _), want in zip(borrowed, expected, strict=True):
        assert torch.equal(x, want)
    kept = [x for x, _ in train_loader(data, batches, 1, torch.device("cpu"), seed=2)]
    assert len(kept) == 20 and all(torch.equal(x, want) for x, want in zip(kept, expected))


@pytest.mark.gpu
def test_on_a_gpu_the_pin_thread_copies_each_slot_out_and_the_slot_is_reused(tmp_path):
    from kdforge.train.data.folder import ImageFolder

    rng = np.random.default_rng(1)
    paths = [_saved(tmp_path, f"{i}.jpg", Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)), quality=90)
             for i in range(40)]
    data = ImageFolder([(p, 0) for p in paths], 24, train=True, seed=2)
    batches = EpochBatches(data, TrainConfig(batch_size=2), seed=2, world=1)
    expected = [torch.stack([data[key][0] for key in keys]) for keys in batches]
    kept = [x for x, _ in train_loader(data, batches, 1, torch.device("cuda"), seed=2, borrowed=True)]
    assert all(x.is_pinned() and torch.equal(x, want) for x, want in zip(kept, expected, strict=True))


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
    assert lines[0].startswith("decode only, one core:")
    for line, backend in zip(lines[1:3], ("torch", "dali"), strict=True):
        assert line.startswith(f"training loader ({backend}):") and "batch 4, 3 batches)" in line
        assert float(line.rsplit(" ", 1)[1]) > 0
    assert "(2 worker(s)" in lines[1] and "(2 thread(s)" in lines[2]
    stages = lines[3].split(": ", 1)[1].split(" = ")[0]
    assert [part.rsplit(" ", 2)[0] for part in stages.split(", ")][:2] == ["read", "header and draws"]
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
