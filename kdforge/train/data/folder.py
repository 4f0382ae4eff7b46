"""ImageNet-style class folders: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg (ROOT/test/
is used as the test split when present, else val/). The validation split is carved from
train/ with a seed. Training images get the standard random-resized crop and flip, drawn from
(seed, epoch, sample index) (kdforge.train.data.randomness), so a training sample is read by
key (index, epoch); evaluation images are resized to image_size/0.875 and centre-cropped.

Decoding a training image: the crop box is chosen from the image's size (PIL reads the header,
and refuses decompression bombs), then OpenCV decodes the JPEG at the smallest scale (1/2, 1/4,
1/8: libjpeg-turbo's DCT-domain downscaling) at which the box still covers the output size, and
resizes the crop. Measured here, PIL's decode-to-array and resize took 3.0 ms of an image's
3.3 ms; OpenCV's take about half (benchmarks/README.md). Other formats, and JPEGs that do not end
with their end-of-image marker (truncated: PIL names them), decode through PIL. Evaluation
images use PIL's draft mode for the same scaling. Training images leave as uint8 (C, H, W): the trainer normalises
them on the device (`device_normalization`), not per image on the CPU; evaluation images are
normalised floats. A file that PIL cannot decode (a truncated download, a text file named .jpg,
an image past PIL's decompression-bomb limit) ends the run with a UserError naming it."""

import io
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from kdforge.errors import UserError, printable
from kdforge.safe_files import read_bytes
from kdforge.train.data.randomness import sample_uniforms
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


cv2.setNumThreads(1)  # one image per call, one loader worker per core: no threads inside
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


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction(box: tuple[int, int, int, int], size: int) -> int:
    """The largest JPEG decoding scale divisor (1, 2, 4, 8) that keeps `box` at least `size` pixels on each side."""
    short = min(box[2] - box[0], box[3] - box[1])
    return max(f for f in _REDUCED if f == 1 or short // f >= size)


def _complete_jpeg(data: bytes) -> bool:
    """A JPEG that ends with its end-of-image marker (a truncated download does not; PIL then says so)."""
    return data.rstrip(b"\0").endswith(b"\xff\xd9")


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

    def __len__(self):
        return len(self.samples)

    def _open(self, source, path: Path):
        try:
            return Image.open(source)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # not an image, a decompression bomb
            raise UserError(f"data.root: {printable(str(path))} is not a readable image ({type(e).__name__}); remove it or replace it.") from None

    def _decode(self, path: Path, opened: Image.Image, make):
        try:
            return make(opened)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # truncated, undecodable
            raise UserError(f"data.root: {printable(str(path))} is not a readable image ({type(e).__name__}); remove it or replace it.") from None

    def _training_view(self, path: Path, data: bytes, img: Image.Image, u) -> np.ndarray:
        """The random-resized crop, flipped or not, as uint8 (RGB, H, W)."""
        box = crop_box(*img.size, u)
        if img.format == "JPEG" and _complete_jpeg(data):  # OpenCV decodes JPEGs faster and scaled (libjpeg-turbo)
            factor = reduction(box, self.image_size)
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor])
            if pixels is None:
                raise UserError(f"data.root: {printable(str(path))} is not a readable image (OpenCV cannot decode it); remove it or replace it.")
            order = (2, 1, 0)  # BGR
        else:
            pixels, order = np.asarray(self._decode(path, img, lambda opened: opened.convert("RGB"))), (0, 1, 2)
        fx, fy = pixels.shape[1] / img.size[0], pixels.shape[0] / img.size[1]
        left, top = int(box[0] * fx), int(box[1] * fy)
        crop = pixels[top:max(top + 1, round(box[3] * fy)), left:max(left + 1, round(box[2] * fx))]  # a view
        out = cv2.resize(crop, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        if u[-1] < 0.5:
            out = cv2.flip(out, 1)
        planes = cv2.split(out)
        return np.stack([planes[c] for c in order])

    def read(self, index: int) -> tuple[str, bytes, int]:
        """(name for messages, encoded image, label) of sample `index`."""
        path, label = self.samples[index]
        return str(path), read_bytes(path, "data.root: image", MAX_IMAGE_BYTES), label

    def __getitem__(self, key):
        training = self.train and isinstance(key, tuple)
        index, epoch = key if training else (key, 0)
        path, data, label = self.read(index)
        if training:
            with self._open(io.BytesIO(data), path) as opened:
                pixels = self._training_view(path, data, opened, sample_uniforms(self.seed, epoch, [index], DRAWS)[0])
            return torch.from_numpy(pixels), label
        resize = round(self.image_size / 0.875)

        def make(img):
            width, height = img.size
            if img.format == "JPEG":  # decode at the smallest scale that still covers the resize
                scale = resize / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            return center_crop(img.convert("RGB"), resize, self.image_size)

        with self._open(io.BytesIO(data), path) as opened:
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
