"""RLE: byte-exact on the real Carvana masks, round trips, both ends of the image, bad strings."""
import csv

import numpy as np
import pytest

from competition.base import rle
from competition.base.masks import read_mask


def _reference_rows(fixtures_dir):
    with open(fixtures_dir / "train_masks.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["img", "rle_mask"]
    return rows[1:]


def test_encode_is_byte_exact_on_all_48_real_masks(fixtures_dir):
    rows = _reference_rows(fixtures_dir)
    assert len(rows) == 48
    for img, expected in rows:
        mask = read_mask(fixtures_dir / f"{img[:-4]}_mask.gif")
        assert rle.encode(mask) == expected, img


def test_decode_of_reference_equals_gif(fixtures_dir):
    for img, expected in _reference_rows(fixtures_dir)[:12]:
        mask = read_mask(fixtures_dir / f"{img[:-4]}_mask.gif")
        np.testing.assert_array_equal(rle.decode(expected), mask)


def test_official_prefix_is_row_major():
    # The official train_masks.csv starts `879386 40 ...` for 00087a6bd4dc_01: row 458, column 941 (0-based).
    mask = rle.decode("879386 40 881253 141")
    rows, cols = np.nonzero(mask)
    assert rows.min() == 458 and cols[rows == 458].min() == 941
    assert mask.sum() == 181


@pytest.mark.parametrize("shape", [(1280, 1918), (7, 5), (8, 8), (1, 1), (3, 16)])
def test_round_trip_random(shape):
    rng = np.random.default_rng(sum(shape))
    for p in (0.0, 0.02, 0.5, 0.98, 1.0):
        m = (rng.random(shape) < p).astype(np.uint8)
        s = rle.encode(m)
        assert s == rle.encode_idiom(m)
        np.testing.assert_array_equal(rle.decode(s, shape), m)


def test_first_and_last_pixel():
    m = np.zeros((1280, 1918), np.uint8)
    m[0, 0] = 1
    m[-1, -1] = 1
    assert rle.encode(m) == f"1 1 {1280 * 1918} 1"
    np.testing.assert_array_equal(rle.decode(rle.encode(m)), m)


def test_full_and_empty():
    assert rle.encode(np.zeros((1280, 1918), np.uint8)) == ""
    assert rle.encode(np.ones((1280, 1918), np.uint8)) == f"1 {1280 * 1918}"
    assert rle.decode("").sum() == 0
    assert rle.decode(f"1 {1280 * 1918}").all()


def test_bool_and_nonbinary_masks_encode_like_nonzero():
    rng = np.random.default_rng(0)
    m = (rng.random((64, 64)) < 0.3).astype(np.uint8) * rng.integers(1, 256, (64, 64)).astype(np.uint8)
    assert rle.encode(m) == rle.encode_idiom(m != 0)
    assert rle.encode(m != 0) == rle.encode_idiom(m != 0)


@pytest.mark.parametrize("bad, why", [
    ("1 2 3", "odd count"), ("0 5", "1-based"), ("5 0", "positive"), ("10 5 12 3", "overlapping"),
    ("20 2 10 2", "unsorted"), (f"{1280 * 1918} 2", "beyond"), ("1 x", "integers"), ("1  2", "integers"),
    ("-1 2", "integers"),
])
def test_decode_rejects_malformed(bad, why):
    with pytest.raises(ValueError, match=why):
        rle.decode(bad)
