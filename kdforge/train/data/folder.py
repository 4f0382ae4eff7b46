"""ImageNet-style class folders: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg (ROOT/test/
is used as the test split when present, else val/). The validation split is carved from
train/ with a seed. Training images get the standard random-resized crop and flip, drawn from
(seed, epoch, sample index) (kdforge.train.data.randomness), so a training sample is read by
key (index, epoch); evaluation images are resized to image_size/0.875 and centre-cropped.

Training images are decoded a batch at a time, straight into one buffer, by
kdforge.train.data.crops, and leave as uint8: the trainer normalises them on the device
(`device_normalization`), not per image on the CPU. Evaluation images use PIL's draft mode (JPEG
DCT scaling) and leave as normalised floats. A file that cannot be decoded (a truncated
download, a text file named .jpg, an image past PIL's decompression-bomb limit) ends the run
with a UserError naming it."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from kdforge.errors import UserError, printable
from kdforge.safe_files import read_bytes
from kdforge.train.data.crops import TrainingViews
from kdforge.train.data.images import opened
from kdforge.train.data.splits import DataBundle, split_indices

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


MAX_IMAGE_BYTES = 256 << 20  # a 100-megapixel PNG is ~200 MiB


def _scan(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image path, label) of every image file under split_dir/CLASS; a UserError for an image
    name that is not a regular file (a pipe would block the reader, /dev/zero never end)."""
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).rglob("*")):
            if path.suffix.lower() in _EXTENSIONS:
                if not path.is_file():
                    if path.is_dir():
                        continue
                    raise UserError(f"data.root: {printable(str(path))} is not a regular file (a device, pipe, socket or "
                                    f"broken link); kdforge reads only regular image files.")
                samples.append((path, label))
    return samples


def center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    width, height = img.size
    scale = resize / min(width, height)
    img = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


class ImageFolder(Dataset):
    """Images by index as evaluation sees them (normalised floats); with `train`, the training
    view by key (index, epoch): augmented, uint8. `read` is where the encoded bytes come from
    (files here; tar shards in kdforge.train.data.shards)."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int, train: bool, seed: int = 0):
        self.samples, self.image_size, self.train, self.seed = samples, image_size, train, seed
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.device_normalization = (IMAGENET_MEAN, IMAGENET_STD) if train else None
        self.keyed = train
        self.views = TrainingViews(self.read, image_size, seed)

    def __getitems__(self, keys: list):
        """A training batch decoded in one go (kdforge.train.data.crops), else the samples one by one."""
        if self.train and keys and isinstance(keys[0], tuple):
            return self.views.batch(keys)
        return [self[key] for key in keys]

    def training_plan(self, keys: list[tuple[int, int]]):
        """What the training keys decode to (encoded bytes, boxes, flips, labels) for another decoder (DALI)."""
        return self.views.plan(keys)

    def __len__(self):
        return len(self.samples)

    def read(self, index: int) -> tuple[str, bytes, int]:
        """(name for messages, encoded image, label) of sample `index`."""
        path, label = self.samples[index]
        return str(path), read_bytes(path, "data.root: image", MAX_IMAGE_BYTES), label

    def __getitem__(self, key):
        if self.train and isinstance(key, tuple):
            images, labels = self.views.batch([key])
            return images[0], int(labels[0])
        path, data, label = self.read(key)
        resize = round(self.image_size / 0.875)
        with opened(path, data) as img:
            width, height = img.size
            if img.format == "JPEG":  # decode at the smallest scale that still covers the resize
                scale = resize / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img = center_crop(img.convert("RGB"), resize, self.image_size)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std, label


def load(root: Path, image_size: int, val_fraction: float, seed: int) -> DataBundle:
    root = Path(root)
    train_dir = root / "train"
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise UserError(f"data.root: {root} needs class folders under train/ and val/ (missing {d}).")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    train_samples = _scan(train_dir, classes)
    test_samples = _scan(test_dir, classes)
    if not train_samples or not test_samples:
        raise UserError(f"data.root: {root} holds no images under train/ or {test_dir.name}/; expected ROOT/train/CLASS/*.jpg.")
    rest, val = split_indices(len(train_samples), val_fraction, seed)
    train = ImageFolder([train_samples[i] for i in rest.tolist()], image_size, train=True, seed=seed)
    val_set = Subset(ImageFolder(train_samples, image_size, train=False), val.tolist())
    test = ImageFolder(test_samples, image_size, train=False)
    return DataBundle(train, val_set, test, len(classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD, classes)
