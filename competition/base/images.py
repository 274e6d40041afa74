"""JPEG decoding with OpenCV, optionally at 1/2, 1/4 or 1/8 size (libjpeg's reduced IDCT)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from .. import NATIVE_SHAPE
from .errors import DataError

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction_for(target_hw: tuple[int, int], native_hw: tuple[int, int] = NATIVE_SHAPE) -> int:
    """Largest JPEG reduction factor (1, 2, 4, 8) that decodes at least ~`target_hw` pixels.

    A 3% shortfall is allowed: 1918 / 2 = 959 still serves a 960-wide model (one pixel of upscaling).
    """
    factor = 1
    for f in (2, 4, 8):
        if native_hw[0] / f >= 0.97 * target_hw[0] and native_hw[1] / f >= 0.97 * target_hw[1]:
            factor = f
    return factor


def check_jpeg(data: bytes, name: str) -> None:
    """Raise ValueError if `data` is not a complete JPEG (libjpeg would silently pad a truncated one)."""
    if not data.startswith(b"\xff\xd8"):
        raise DataError(f"{name}: not a JPEG file")
    if b"\xff\xd9" not in data[-64:]:
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker)")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers


def jpeg_size(head: bytes, name: str) -> tuple[int, int]:
    """(height, width) from the first bytes of a JPEG (its frame header, without decoding); a file that is not a
    JPEG (a PNG named .jpg, say), or whose header is cut short, is a DataError naming it."""
    if not head.startswith(b"\xff\xd8"):
        kind = "a PNG" if head.startswith(b"\x89PNG") else "not a JPEG"
        raise DataError(f"{name}: {kind} (a photo of the competition is a JPEG)")
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            raise DataError(f"{name}: damaged JPEG header")
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(head[at + 2:at + 4], "big")
        if marker in _SOF:
            if at + 9 > len(head):
                break
            return int.from_bytes(head[at + 5:at + 7], "big"), int.from_bytes(head[at + 7:at + 9], "big")
        at += 2 + length
    raise DataError(f"{name}: no JPEG frame header in its first {len(head)} bytes (damaged or cut short)")


def decode_jpeg(data: bytes, name: str = "image", reduce: int = 1,
                expect: tuple[int, int] | None = NATIVE_SHAPE) -> np.ndarray:
    """Decode JPEG bytes to RGB uint8 (H, W, 3), reduced by `reduce`; ValueError naming `name` if bad."""
    check_jpeg(data, name)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduce])
    if img is None:
        raise DataError(f"{name}: corrupt JPEG (OpenCV could not decode it)")
    if expect is not None:
        want = (-(-expect[0] // reduce), -(-expect[1] // reduce))
        if img.shape[:2] != want:
            full = (img.shape[0] * reduce, img.shape[1] * reduce)
            raise DataError(f"{name}: image is about {full[1]}x{full[0]}, expected {expect[1]}x{expect[0]}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_jpeg(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Read and decode a JPEG file (see `decode_jpeg`)."""
    with open(path, "rb") as f:
        return decode_jpeg(f.read(), str(path), reduce)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()
