"""Reading and writing Carvana's `<id>_mask.gif`: single-frame palette GIFs, pixel values 0/1."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import NATIVE_SHAPE
from .errors import DataError
from .fileio import write_bytes

_PALETTE = [0, 0, 0, 255, 255, 255]


def read_mask(source: str | os.PathLike | bytes, name: str | None = None,
              shape: tuple[int, int] = NATIVE_SHAPE) -> np.ndarray:
    """Read a mask GIF (path or bytes) as a uint8 0/1 array of `shape`; ValueError naming it if bad.

    The GIFs are palette images whose pixels are the palette indices 0/1; the palette is looked up
    so that a mask is "set" where its colour is bright, whatever the index order.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "mask")
    try:
        data = source if isinstance(source, bytes) else open(source, "rb").read()
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "GIF":
                raise DataError(f"{label}: not a GIF (found {im.format})")
            if (im.height, im.width) != tuple(shape):
                raise DataError(f"{label}: mask is {im.width}x{im.height}, expected {shape[1]}x{shape[0]}")
            im.seek(0)
            return _to_binary(im, label)
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
        raise DataError(f"{label}: unreadable or truncated mask GIF ({e})") from e


def _to_binary(im: Image.Image, label: str) -> np.ndarray:
    """Binary mask from a palette, greyscale or 1-bit image."""
    if im.mode == "P":
        indices = np.asarray(im)
        palette = np.array(im.getpalette() or _PALETTE, dtype=np.int32).reshape(-1, 3)
        bright = (palette.sum(axis=1) > 3 * 127).astype(np.uint8)
        bright = np.concatenate([bright, np.zeros(256 - bright.size, np.uint8)])
        return bright[indices]
    if im.mode in ("L", "1"):
        values = np.asarray(im.convert("L"))
        return (values > 127).astype(np.uint8) if values.max(initial=0) > 1 else values.astype(np.uint8)
    raise DataError(f"{label}: mask GIF has mode {im.mode}; expected a palette (P) image with 0/1 indices")


def encode_mask_gif(mask: np.ndarray) -> bytes:
    """Encode a 0/1 mask as a palette GIF like Kaggle's (indices 0/1, palette black/white)."""
    im = Image.fromarray((mask != 0).astype(np.uint8), mode="P")
    im.putpalette(_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="GIF")
    return buf.getvalue()


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a mask GIF atomically."""
    write_bytes(path, encode_mask_gif(mask))
