"""ImageNet-style class folders: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg (ROOT/test/
is used as the test split when present, else val/). The validation split is carved from
train/ with a seed. Training images get the standard random-resized crop and flip; evaluation
images are resized to image_size/0.875 and centre-cropped. A file that PIL cannot decode (a
truncated download, a text file named .jpg, an image past PIL's decompression-bomb limit) ends
the run with a UserError naming it."""

import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from kdforge.errors import UserError
from kdforge.train.data.splits import DataBundle, split_indices

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


def _scan(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).rglob("*")):
            if path.suffix.lower() in _EXTENSIONS:
                samples.append((path, label))
    return samples


def random_resized_crop(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return center_crop(img, size, size)


def center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    width, height = img.size
    scale = resize / min(width, height)
    img = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


class ImageFolder(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], image_size: int, train: bool):
        self.samples, self.image_size, self.train = samples, image_size, train
        self.rng = random.Random(0)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # truncated, not an image, a decompression bomb
            raise UserError(f"data.root: {path} is not a readable image ({type(e).__name__}); remove it or replace it.") from None
        if self.train:
            img = random_resized_crop(img, self.image_size, self.rng)
            if self.rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = center_crop(img, round(self.image_size / 0.875), self.image_size)
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
    train = Subset(ImageFolder(train_samples, image_size, train=True), rest.tolist())
    val_set = Subset(ImageFolder(train_samples, image_size, train=False), val.tolist())
    test = ImageFolder(test_samples, image_size, train=False)
    return DataBundle(train, val_set, test, len(classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD, classes)
