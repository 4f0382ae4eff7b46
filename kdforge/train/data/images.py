"""The one guarded way kdforge opens a user's image, whichever path reads it (the training
loader's crops, evaluation, DALI's plan, `kdforge data bench`, `kdforge data pack`): the bytes
come bounded from kdforge.safe_files.read_bytes, the size the header declares is checked against
PIL's decompression-bomb limit before any pixel is decoded (PIL itself only warns between one and
two times that limit), and anything a decoder raises on a stranger's file (PIL, libjpeg-turbo
through simplejpeg) is one sentence naming the file.
"""

import contextlib
import io
import math

import numpy as np
import simplejpeg
from PIL import Image

from kdforge.errors import UserError, printable

_DECODED_COLOURS = ("RGB", "YCbCr", "Gray")  # what libjpeg-turbo converts to RGB itself; CMYK and YCCK go through PIL


def image_error(name: str, reason: str) -> UserError:
    return UserError(f"data.root: {printable(name)} is not a readable image ({reason}); remove it or replace it.")


def _check_size(name: str, width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS or math.inf
    if width * height > limit:
        raise image_error(name, f"its header declares {width} x {height} pixels, past the {limit:,} a decoder is allowed")


@contextlib.contextmanager
def opened(name: str, data: bytes):
    """PIL's lazily opened image of `data`, its declared size checked; a UserError where PIL cannot
    read it. Decoding inside the block is guarded too."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_size(name, *img.size)
            yield img
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure on a stranger's bytes: truncated, a bomb, not an image
        raise image_error(name, type(e).__name__) from None


def header(name: str, data: bytes) -> tuple[int, int, bool]:
    """(width, height, whether libjpeg-turbo decodes it to RGB itself) from the header alone."""
    try:
        height, width, colours, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # not a JPEG libjpeg-turbo reads: PIL's turn
        with opened(name, data) as img:
            return *img.size, False
    _check_size(name, width, height)
    return width, height, colours in _DECODED_COLOURS


def decode_rgb(name: str, data: bytes) -> np.ndarray:
    """The whole image as RGB pixels (H, W, 3) uint8."""
    with opened(name, data) as img:
        return np.asarray(img.convert("RGB"))
