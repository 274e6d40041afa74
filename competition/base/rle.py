"""Kaggle's run-length encoding for Carvana masks: 1-based, row-major `start length` pairs.

Pixels are numbered row by row over each 1918-wide row, starting at 1; an empty mask is "".
The popular unpadded snippet mis-encodes masks whose first or last pixel is set; this module
handles both ends and is byte-for-byte equal to the padded numpy idiom, only faster.
"""
from __future__ import annotations

import re
import sys

import numpy as np

from .. import NATIVE_SHAPE

_LITTLE_ENDIAN = sys.byteorder == "little"
_RLE_PATTERN = re.compile(r"[0-9]+(?: [0-9]+)*")


def _transitions_bytewise(flat: np.ndarray) -> np.ndarray:
    """Indices i where flat[i] != flat[i-1], with virtual zeros before and after (plain numpy)."""
    padded = np.concatenate([[0], flat, [0]])
    return np.flatnonzero(padded[1:] != padded[:-1])


_BYTES_EQUAL = np.uint64(0x0101010101010101)


def _transitions_wordwise(flat: np.ndarray) -> np.ndarray:
    """Indices i where flat[i] != flat[i-1] (a zero before and after), reading 8 bytes at a time.

    A transition inside an 8-byte word, or at its start, needs the word to differ from the one before
    it, or to be a mixed word repeating its predecessor. One aligned comparison of the words finds the
    few candidates (a car mask changes value only a few thousand times in 2.4 million pixels); only
    those are split into bytes. Needs a length divisible by 8.
    """
    x = flat.view(np.uint64)
    n = x.size
    differs = np.empty(n, dtype=bool)
    differs[0] = True
    np.not_equal(x[1:], x[:-1], out=differs[1:])
    candidates = np.flatnonzero(differs)
    words = x[candidates]
    mixed = words != (words & np.uint64(0xFF)) * _BYTES_EQUAL  # not all 8 bytes alike
    # Words equal to a mixed predecessor (a repeating 8-byte pattern) are not candidates: add them.
    following = np.append(candidates[1:], n)
    gaps = (following - candidates - 1)[mixed]
    if gaps.any():
        starts = candidates[mixed] + 1
        repeats = np.repeat(starts - np.cumsum(np.append(0, gaps[:-1])), gaps) + np.arange(gaps.sum())
        candidates = np.sort(np.concatenate([candidates, repeats]))
    # Byte i of  word ^ (word << 8 | last byte of the word before)  is pixel[8k+i] XOR pixel[8k+i-1]
    # (little-endian words; a virtual 0 before the first pixel).
    words = x[candidates]
    before = flat[candidates * 8 - 1].astype(np.uint64)
    before[candidates == 0] = 0
    flips = np.flatnonzero((words ^ ((words << np.uint64(8)) | before)).view(np.uint8))
    edges = candidates[flips >> 3] * 8 + (flips & 7)
    if flat[-1]:
        edges = np.append(edges, flat.size)
    return edges


def _alternates(flat: np.ndarray, edges: np.ndarray) -> bool:
    """True when every edge flips between zero and non-zero (false for e.g. 1 next to 255)."""
    inside = edges[edges < flat.size]
    after = flat[inside] != 0
    before = np.where(inside > 0, flat[inside - 1], 0) != 0
    return bool((after != before).all())


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D 0/1 (or boolean, or 0/non-zero) mask as Kaggle's RLE string ("" when empty)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    flat = np.ascontiguousarray(mask).reshape(-1)
    edges = None
    if flat.dtype == np.uint8 and flat.size % 8 == 0 and flat.size and _LITTLE_ENDIAN:
        edges = _transitions_wordwise(flat)
        if not _alternates(flat, edges):
            edges = None
    if edges is None:
        edges = _transitions_bytewise(flat != 0)
    if edges.size == 0:
        return ""
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]
    runs[:, 0] += 1
    # repr of a list of ints is C code: faster than joining str() of each number
    return str(runs.ravel().tolist())[1:-1].replace(",", "")


def parse(rle: str, size: int = NATIVE_SHAPE[0] * NATIVE_SHAPE[1]) -> np.ndarray:
    """Parse and check an RLE string into an (n, 2) array of 0-based [start, end) runs."""
    text = rle.strip()
    if not text:
        return np.zeros((0, 2), dtype=np.int64)
    if not _RLE_PATTERN.fullmatch(text):
        raise ValueError(f"RLE must be space-separated non-negative integers, got {_preview(text)!r}")
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except OverflowError:
        raise ValueError(f"RLE number too large in {_preview(text)!r}") from None
    if numbers.size % 2:
        raise ValueError(f"RLE has an odd count of numbers ({numbers.size}): pairs of start length expected")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any():
        raise ValueError("RLE start 0 found: starts are 1-based")
    if (lengths <= 0).any():
        raise ValueError(f"RLE run of length {int(lengths[lengths <= 0][0])}: lengths must be positive")
    ends = starts + lengths
    if (starts[1:] < ends[:-1]).any():
        i = int(np.flatnonzero(starts[1:] < ends[:-1])[0])
        raise ValueError(f"RLE runs unsorted or overlapping at pair {i + 2} (start {int(starts[i + 1]) + 1})")
    if ends.size and int(ends[-1]) > size:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])}, beyond the {size} pixels of the image")
    return np.stack([starts, ends], axis=1)


def decode(rle: str, shape: tuple[int, int] = NATIVE_SHAPE) -> np.ndarray:
    """Decode Kaggle's RLE string into a uint8 0/1 mask of `shape` (ValueError when malformed)."""
    runs = parse(rle, shape[0] * shape[1])
    # A +1/-1 difference array and a cumulative sum paint all runs without a Python loop.
    delta = np.zeros(shape[0] * shape[1] + 1, dtype=np.int8)
    delta[runs[:, 0]] = 1
    np.subtract.at(delta, runs[:, 1], 1)
    return np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8).reshape(shape)


def encode_idiom(mask: np.ndarray) -> str:
    """The well-known padded numpy idiom, kept as the reference and the benchmark baseline."""
    pixels = np.concatenate([[0], mask.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def _preview(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."
