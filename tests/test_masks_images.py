"""Mask GIFs (palette indices) and JPEG decoding, with bad inputs named in the error."""
import io

import numpy as np
import pytest
from PIL import Image

from competition.base.errors import DataError
from competition.base.images import decode_jpeg, encode_jpeg, reduction_for
from competition.base.masks import encode_mask_gif, read_mask


def test_real_mask_is_palette_indices(fixtures_dir):
    path = fixtures_dir / "0795e132d090_01_mask.gif"
    with Image.open(path) as im:
        assert im.mode == "P"
        raw = np.asarray(im)
    assert set(np.unique(raw)) == {0, 1}
    # A reader that thresholds the raw values at 127 sees nothing; ours reads the car.
    assert (raw > 127).sum() == 0
    mask = read_mask(path)
    assert mask.shape == (1280, 1918) and mask.dtype == np.uint8
    assert 0.1 < mask.mean() < 0.5


def test_mask_gif_round_trip_and_bytes_input():
    m = np.zeros((1280, 1918), np.uint8)
    m[100:200, 300:900] = 1
    data = encode_mask_gif(m)
    np.testing.assert_array_equal(read_mask(data), m)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.format == "GIF"


def test_mask_of_wrong_size_names_file(tmp_path):
    p = tmp_path / "x_01_mask.gif"
    p.write_bytes(encode_mask_gif(np.zeros((10, 20), np.uint8)))
    with pytest.raises(ValueError, match="x_01_mask.gif.*20x10"):
        read_mask(p)


def test_mask_not_gif_or_rgb_mode(tmp_path):
    p = tmp_path / "a_01_mask.gif"
    buf = io.BytesIO()
    Image.new("RGB", (1918, 1280)).save(buf, format="PNG")
    p.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="not a GIF"):
        read_mask(p)
    with pytest.raises(DataError, match="unreadable or truncated"):
        read_mask(encode_mask_gif(np.ones((1280, 1918), np.uint8))[:50], name="cut.gif")


def test_jpeg_decode_full_and_reduced(fixtures_dir):
    data = (fixtures_dir / "0795e132d090_01.jpg").read_bytes()
    full = decode_jpeg(data, "x")
    assert full.shape == (1280, 1918, 3)
    quarter = decode_jpeg(data, "x", reduce=4)
    assert quarter.shape == (320, 480, 3)
    assert reduction_for((96, 128)) == 8 and reduction_for((640, 960)) == 2 and reduction_for((1280, 1920)) == 1


def test_truncated_and_corrupt_jpeg(fixtures_dir):
    data = (fixtures_dir / "0795e132d090_01.jpg").read_bytes()
    with pytest.raises(ValueError, match="car_01.jpg: truncated"):
        decode_jpeg(data[: len(data) // 2], "car_01.jpg")
    with pytest.raises(ValueError, match="not a JPEG"):
        decode_jpeg(b"GIF89a" + data[6:], "y.jpg")


def test_wrong_image_size():
    data = encode_jpeg(np.zeros((100, 200, 3), np.uint8))
    with pytest.raises(ValueError, match="expected 1918x1280"):
        decode_jpeg(data, "small.jpg")
