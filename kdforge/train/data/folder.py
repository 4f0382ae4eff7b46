"""ImageNet-style class folders: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg (ROOT/test/
is used as the test split when present, else val/). The validation split is carved from
train/ with a seed. Training images get the standard random-resized crop and flip, drawn from
(seed, epoch, sample index) (kdforge.train.data.randomness), so a training sample is read by
key (index, epoch); evaluation images are resized to image_size/0.875 and centre-cropped.

Decoding: the crop box is chosen from the image's size (known from its header), then the JPEG
decoder is told the smallest scale (1/2, 1/4, 1/8: libjpeg-turbo's DCT-domain downscaling,
PIL's draft mode) at which the box still covers the output size, so most of a large photo is
never decoded at full size. Training images leave as uint8 (C, H, W): the trainer normalises
them on the device (`device_normalization`), not per image on the CPU; evaluation images are
normalised floats. A file that PIL cannot decode (a truncated download, a text file named .jpg,
an image past PIL's decompression-bomb limit) ends the run with a UserError naming it."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from kdforge.errors import UserError
from kdforge.train.data.randomness import sample_uniforms
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


RRC_ATTEMPTS = 10
DRAWS = 4 * RRC_ATTEMPTS + 1  # per attempt: area, ratio, left, top; then the flip


def crop_box(width: int, height: int, u) -> tuple[int, int, int, int]:
    """The random-resized-crop box (left, top, right, bottom) from draws `u` (scale 0.08-1, ratio
    3/4-4/3, torchvision's ten attempts); the centred square of the short side where none fits."""
    area = width * height
    for attempt in range(RRC_ATTEMPTS):
        a, r, x, y = u[4 * attempt:4 * attempt + 4]
        target = area * (0.08 + 0.92 * a)
        ratio = math.exp(math.log(3 / 4) + r * (math.log(4 / 3) - math.log(3 / 4)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(x * (width - w + 1)), int(y * (height - h + 1))
            return left, top, left + w, top + h
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _drafted(img: Image.Image, box: tuple[int, int, int, int], size: int) -> tuple[Image.Image, tuple[float, ...]]:
    """The image decoded at the smallest JPEG scale that keeps `box` at least `size` pixels on
    each side, and the box in that image's coordinates (other formats decode at full size)."""
    width, height = img.size
    scale = size / max(1, min(box[2] - box[0], box[3] - box[1]))
    if scale < 1 and img.format == "JPEG":
        img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    fx, fy = img.size[0] / width, img.size[1] / height
    return img, (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)


def center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    width, height = img.size
    scale = resize / min(width, height)
    img = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


class ImageFolder(Dataset):
    """Images by index as evaluation sees them (normalised floats); with `train`, the training
    view by key (index, epoch): augmented, uint8."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int, train: bool, seed: int = 0):
        self.samples, self.image_size, self.train, self.seed = samples, image_size, train, seed
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.device_normalization = (IMAGENET_MEAN, IMAGENET_STD) if train else None
        self.keyed = train

    def __len__(self):
        return len(self.samples)

    def _open(self, path: Path):
        try:
            return Image.open(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # not an image, a decompression bomb
            raise UserError(f"data.root: {path} is not a readable image ({type(e).__name__}); remove it or replace it.") from None

    def _decode(self, path: Path, opened: Image.Image, make):
        try:
            return make(opened)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # truncated, undecodable
            raise UserError(f"data.root: {path} is not a readable image ({type(e).__name__}); remove it or replace it.") from None

    def __getitem__(self, key):
        training = self.train and isinstance(key, tuple)
        index, epoch = key if training else (key, 0)
        path, label = self.samples[index]
        with self._open(path) as opened:
            if training:
                u = sample_uniforms(self.seed, epoch, [index], DRAWS)[0]

                def make(img):
                    img, box = _drafted(img, crop_box(*img.size, u), self.image_size)
                    out = img.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR, box=box)
                    return out.transpose(Image.FLIP_LEFT_RIGHT) if u[-1] < 0.5 else out

                img = self._decode(path, opened, make)
                return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous(), label
            resize = round(self.image_size / 0.875)

            def make(img):
                width, height = img.size
                if img.format == "JPEG":
                    scale = resize / min(width, height)
                    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                return center_crop(img.convert("RGB"), resize, self.image_size)

            img = self._decode(path, opened, make)
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
