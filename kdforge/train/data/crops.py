"""Training views of encoded images: the random-resized crop and flip of each sample, drawn from
(seed, epoch, sample index) (kdforge.train.data.randomness), decoded straight into one batch
buffer.

A batch is one uint8 (N, H, W, 3) buffer (inside a loader worker, a reused shared-memory slot:
kdforge.train.data.shared_batches) handed on as an (N, 3, H, W) view; its draws come from one
call for the whole batch. Per JPEG: libjpeg-turbo (simplejpeg) reads the header, the crop box is
chosen from the size, the image is decoded to RGB into a reused buffer, at 1/2, 1/4 or 1/8 scale
(DCT-domain) when the box stays at least the output size, and OpenCV resizes the box (a view)
into the batch, flipping through a scratch tile. Measured here, this takes 0.65 ms of an image
that PIL decodes in 0.72 ms (benchmarks/README.md); scale factors between 1/2 and 1 are not used,
libjpeg-turbo's non-power-of-two IDCTs were slower than a full decode. Other formats, CMYK
JPEGs and JPEGs that libjpeg-turbo reports damaged decode through PIL; headers, sizes and
failures go through kdforge.train.data.images, the one guarded decoder.
"""

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
import torch

from kdforge.train.data import shared_batches
from kdforge.train.data.images import decode_rgb, header
from kdforge.train.data.randomness import sample_uniforms

cv2.setNumThreads(1)  # one image per call, one loader worker per core: no threads inside
RRC_ATTEMPTS = 10
DRAWS = 4 * RRC_ATTEMPTS + 1  # per attempt: area, ratio, left, top; then the flip
REDUCTIONS = (1, 2, 4, 8)  # libjpeg-turbo's power-of-two DCT scalings


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


def reduction(box: tuple[int, int, int, int], size: int) -> int:
    """The largest JPEG decoding scale divisor (1, 2, 4, 8) that keeps `box` at least `size` pixels on each side."""
    short = min(box[2] - box[0], box[3] - box[1])
    return max(f for f in REDUCTIONS if f == 1 or short // f >= size)


class Stopwatch:
    """Seconds spent per stage over many images (`kdforge data bench`'s breakdown); `lap(stage)`
    charges the time since the previous lap to `stage`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


class _Unwatched:
    def lap(self, stage: str) -> None:
        pass


UNWATCHED = _Unwatched()


@dataclass
class Planned:
    """One training sample to decode: its encoded bytes, label, full size, crop box and flip."""

    name: str
    data: bytes
    label: int
    width: int
    height: int
    box: tuple[int, int, int, int]
    flip: bool
    jpeg: bool  # libjpeg-turbo decodes it to RGB itself


class TrainingViews:
    """Decodes training samples of size `size` with draws from `seed`; `read(index)` gives a
    sample's (name, encoded bytes, label)."""

    def __init__(self, read, size: int, seed: int):
        self.read, self.size, self.seed = read, size, seed
        self.scratch = np.empty((size, size, 3), np.uint8)
        self.decoded = np.empty(0, np.uint8)

    def plan(self, keys: list[tuple[int, int]], watch=UNWATCHED) -> list[Planned]:
        """What the training keys (index, epoch) decode to: one draw call per epoch in the batch, headers only."""
        draws = {}
        for epoch in {e for _, e in keys}:
            indices = [i for i, e in keys if e == epoch]
            draws.update(zip(((i, epoch) for i in indices), sample_uniforms(self.seed, epoch, indices, DRAWS)))
        planned = []
        for key in keys:
            name, data, label = self.read(key[0])
            watch.lap("read")
            width, height, jpeg = header(name, data)
            u = draws[key]
            planned.append(Planned(name, data, label, width, height, crop_box(width, height, u), bool(u[-1] < 0.5), jpeg))
            watch.lap("header and draws")
        return planned

    def batch(self, keys: list[tuple[int, int]], watch=UNWATCHED):
        """(uint8 images (N, 3, size, size), a channels-last view; int64 labels) of the training keys
        (index, epoch); in a loader worker, a SharedBatch that kdforge.train.data.shared_batches.claim unpacks."""
        images, slot = shared_batches.batch_buffer((len(keys), self.size, self.size, 3))
        out = images.numpy()
        planned = self.plan(keys, watch)
        for row, sample in enumerate(planned):
            self._view(sample, out[row], watch)
        labels = torch.tensor([s.label for s in planned], dtype=torch.long)
        return shared_batches.batch(images.permute(0, 3, 1, 2), labels, slot)

    def _view(self, sample: Planned, out: np.ndarray, watch) -> None:
        pixels = self._decode(sample)
        watch.lap("decode")
        fx, fy = pixels.shape[1] / sample.width, pixels.shape[0] / sample.height
        left, top, right, bottom = sample.box
        x0, y0 = int(left * fx), int(top * fy)
        crop = pixels[y0:max(y0 + 1, round(bottom * fy)), x0:max(x0 + 1, round(right * fx))]  # a view
        if sample.flip:
            cv2.resize(crop, (self.size, self.size), dst=self.scratch, interpolation=cv2.INTER_LINEAR)
            cv2.flip(self.scratch, 1, dst=out)
        else:
            cv2.resize(crop, (self.size, self.size), dst=out, interpolation=cv2.INTER_LINEAR)
        watch.lap("crop, resize, flip")

    def _decode(self, sample: Planned) -> np.ndarray:
        """RGB pixels, at 1/2, 1/4 or 1/8 scale where the box allows."""
        if sample.jpeg:
            factor = reduction(sample.box, self.size)
            height, width = math.ceil(sample.height / factor), math.ceil(sample.width / factor)
            if self.decoded.size < height * width * 3:
                self.decoded = np.empty(height * width * 3, np.uint8)
            try:
                return simplejpeg.decode_jpeg(sample.data, "RGB", min_height=height, min_width=width, buffer=self.decoded)
            except ValueError:  # damaged: PIL says how
                pass
        return decode_rgb(sample.name, sample.data)
