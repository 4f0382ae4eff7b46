"""WebDataset tar shards: `kdforge data pack ROOT OUT --shard-size N` writes them from an
ImageNet-style folder, `data.name: webdataset` trains from them.

A shard folder holds train-NNNNNN.tar and test-NNNNNN.tar (WebDataset's layout: one sample is
the members KEY.jpg (the original encoded file, any image extension) and KEY.cls (the label),
written by webdataset's ShardWriter) and index.json: the class names, and per split the shards
in order with their sample counts and labels. Samples are read by index through wids (the
WebDataset project's random-access reader), so the trainer's sampler splits an epoch across
ranks without overlap and each worker loads whatever batches it is handed: every training
sample is seen exactly once per epoch, and the augmentation contract of image folders holds
(the sample index is the position in the training split; decoding and crops are
kdforge.train.data.folder's). The validation split is carved from the training shards with the
run's seed, as for folders.

Only shards in the folder of index.json are read: index.json may come from anyone, and wids
would run a `pipe:` URL as a shell command, so a shard name must be a plain file name there.
"""

import contextlib
import io
import json
import tarfile
from pathlib import Path

from kdforge.errors import UserError, printable, printable_name
from kdforge.safe_files import read_bytes, read_json
from kdforge.train.data.folder import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_BYTES, ImageFolder, _scan
from kdforge.train.data.images import header
from kdforge.train.data.splits import DataBundle, split_indices

SPLITS = ("train", "test")
_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")


def pack(root: Path, out: Path, shard_size: int) -> dict:
    """Writes the shards and index.json of an ImageNet-style folder; returns the index."""
    import webdataset as wds

    root, out = Path(root), Path(out)
    if shard_size < 1:
        raise UserError("--shard-size must be at least 1.")
    train_dir = root / "train"
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise UserError(f"{root} needs class folders under train/ and val/ (or test/).")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if out.exists() and not out.is_dir():
        raise UserError(f"{printable(str(out))} is a file; give a folder for the shards.")
    out.mkdir(parents=True, exist_ok=True)
    index = {"classes": classes, "splits": {}}
    for split, folder in zip(SPLITS, (train_dir, test_dir)):
        samples = _scan(folder, classes)
        if not samples:
            raise UserError(f"{folder} holds no images.")
        shards: list[dict] = []
        for start in range(0, len(samples), shard_size):
            name = f"{split}-{start // shard_size:06d}.tar"
            chunk = samples[start:start + shard_size]
            with wds.TarWriter(str(out / name)) as sink:
                for i, (path, label) in enumerate(chunk, start=start):
                    image = read_bytes(path, "image", MAX_IMAGE_BYTES)
                    header(str(path), image)  # named here, not when a run meets it
                    sink.write({"__key__": f"{i:09d}", path.suffix.lower().lstrip("."): image, "cls": str(label).encode()})
            shards.append({"url": name, "nsamples": len(chunk), "labels": [label for _, label in chunk]})
        index["splits"][split] = shards
    (out / "index.json").write_text(json.dumps(index))
    return index


class ShardImages(ImageFolder):
    """The images of one split's shards (those at `positions`, default all), read by index;
    otherwise an ImageFolder."""

    def __init__(self, folder: Path, shards: list[dict], image_size: int, train: bool, seed: int = 0, positions=None):
        labels = [label for shard in shards for label in shard["labels"]]
        names = [f"{shard['url']}#{i}" for shard in shards for i in range(shard["nsamples"])]
        self.positions = list(range(len(labels))) if positions is None else list(positions)
        super().__init__([(names[i], labels[i]) for i in self.positions], image_size, train, seed)
        self.folder, self.shards, self._reader = Path(folder), shards, None

    def __getstate__(self):  # worker processes open their own reader
        return {**self.__dict__, "_reader": None}

    def read(self, index: int) -> tuple[str, bytes, int]:
        import wids

        if self._reader is None:
            spec = [{"url": str(self.folder / s["url"]), "nsamples": s["nsamples"]} for s in self.shards]
            # wids prints a summary of every dataset it opens
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                self._reader = wids.ShardListDataset(spec, transformations=[], cache_dir=str(self.folder), keep=True,
                                                     lru_size=min(len(spec), 256))
            self._reader.check_cache_misses = lambda: None  # random access across shards is the point here
        name, label = self.samples[index]
        try:
            sample = self._reader[self.positions[index]]
        except (IndexError, KeyError, ValueError, OSError, tarfile.TarError) as e:
            raise UserError(f"data.root: sample {printable(name)} cannot be read from its shard ({type(e).__name__}); the "
                            f"shard holds fewer or other samples than index.json says, so write the shards again.") from None
        data = next((sample[f".{k}"] for k in _IMAGE_KEYS if f".{k}" in sample), None)
        if data is None:
            raise UserError(f"data.root: sample {name} of the shards holds no image member ({', '.join(_IMAGE_KEYS)}).")
        return name, data.read() if hasattr(data, "read") else bytes(data), label


INDEX_MAX_BYTES = 256 << 20  # ImageNet's index is 10 MiB


def _checked_index(root: Path) -> dict:
    if not (root / "index.json").exists():
        raise UserError(f"data.root: {printable(str(root))} has no index.json; write shards with `kdforge data pack`.")
    index = read_json(root / "index.json", "data.root: shard index", INDEX_MAX_BYTES)
    try:
        classes, splits = index["classes"], index["splits"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError("classes is not a list of names")
        for split in SPLITS:
            for shard in splits[split]:
                name, n, labels = shard["url"], shard["nsamples"], shard["labels"]
                if not isinstance(name, str) or Path(name).name != name or ":" in name or not (root / name).is_file():
                    raise ValueError(f"shard {printable_name(name)} is not a regular file in {printable(str(root))}")
                if not isinstance(n, int) or n < 1 or len(labels) != n or not all(isinstance(y, int) and 0 <= y < len(classes) for y in labels):
                    raise ValueError(f"shard {printable_name(name)} has a bad sample count or labels")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"data.root: {printable(str(root))}/index.json is malformed ({printable(str(e))}).") from None
    return index


def load(root: Path, image_size: int, val_fraction: float, seed: int) -> DataBundle:
    root = Path(root)
    index = _checked_index(root)
    shards = index["splits"]
    count = sum(s["nsamples"] for s in shards["train"])
    rest, val = split_indices(count, val_fraction, seed)
    train = ShardImages(root, shards["train"], image_size, train=True, seed=seed, positions=rest.tolist())
    val_set = ShardImages(root, shards["train"], image_size, train=False, positions=val.tolist())
    test = ShardImages(root, shards["test"], image_size, train=False)
    classes = index["classes"]
    return DataBundle(train, val_set, test, len(classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD, classes)
