"""Training on random crops: image and mask cut alike, seeded per pass, whole frames to validate and score."""
import json

import numpy as np
import pytest

import keras

from competition.config import TrainConfig, load_config, parse_crop, preset
from competition.data.layout import open_dataset
from competition.data.pipeline import Cache, augment_crops, build_cache, crop_augmentation, crop_offsets, make_dataset, streaming
from competition.base.errors import UserError
from competition.base.geometry import Geometry
from competition.runs.folder import load_oof
from competition.training.train import train


def pattern_cache(n: int = 6, size: tuple[int, int] = (40, 56), seed: int = 0) -> Cache:
    """Noise photos whose mask is derived from the photo (red > 128): any misaligned cut breaks the relation."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    masks = (images[..., :1] > 128).astype(np.uint8)
    return Cache([f"car{k:02d}_01" for k in range(n)], images, masks)


def batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def locate(frame: np.ndarray, window: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where `window` is a cut of `frame`."""
    views = np.lib.stride_tricks.sliding_window_view(frame, window.shape)[:, :, 0]
    return [tuple(int(v) for v in hit) for hit in np.argwhere((views == window).all(axis=(2, 3, 4)))]


@pytest.mark.parametrize("augment", [(), ("flip",)])
def test_every_crop_keeps_image_and_mask_aligned(augment):
    cache = pattern_cache()
    crop = (16, 24)
    ds = make_dataset(cache, cache.ids, 4, training=True, augment=augment, seed=3, crop=crop)
    seen = set()
    for _ in range(2):  # two passes
        for x, y in batches(ds):
            assert x.shape[1:] == (16, 24, 3) and y.shape[1:] == (16, 24, 1)
            red = np.rint(x[..., :1] * 255)
            np.testing.assert_array_equal(y, (red > 128).astype(np.float32))  # every crop of every batch
            for image in np.rint(x * 255).astype(np.uint8):
                hits = [(n, t, l) for n in range(len(cache.ids))
                        for frame in (cache.images[n], cache.images[n][:, ::-1])
                        for t, l in locate(frame, image)]
                assert len(hits) == 1, "each crop is one window of one training frame"
                seen.add(hits[0])
    assert len({(t, l) for _, t, l in seen}) > 3, "crop corners vary"


def test_crop_corners_are_drawn_by_seed_and_pass_so_a_resume_sees_the_same_crops():
    cache = pattern_cache()
    crop = (16, 24)
    uninterrupted = make_dataset(cache, cache.ids, 3, training=True, seed=5, crop=crop)
    batches(uninterrupted)  # pass 0
    second_pass = batches(uninterrupted)  # pass 1
    resumed = batches(make_dataset(cache, cache.ids, 3, training=True, seed=5, crop=crop, first_epoch=1))
    for (xa, ya), (xb, yb) in zip(second_pass, resumed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other_seed = batches(make_dataset(cache, cache.ids, 3, training=True, seed=6, crop=crop, first_epoch=1))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(resumed, other_seed))
    # the shuffle order is the one whole-frame training sees: crops add a stream, they do not move the old one
    whole = make_dataset(cache, cache.ids, 3, training=True, seed=5, first_epoch=1)
    order = [n for x, _ in batches(whole) for frame in np.rint(x * 255).astype(np.uint8)
             for n in range(len(cache.ids)) if np.array_equal(cache.images[n], frame)]
    cropped = [n for x, _ in resumed for c in np.rint(x * 255).astype(np.uint8)
               for n in range(len(cache.ids)) if locate(cache.images[n], c)]
    assert sorted(order) == list(range(len(cache.ids)))
    assert [set(order[k:k + 3]) for k in (0, 3)] == [set(cropped[k:k + 3]) for k in (0, 3)]


def test_whole_frame_augmentation_is_drawn_anew_each_pass_and_repeated_by_a_resume():
    """Whole frames take crops' path: per-example draws of (seed, pass). Before, tf.data's random ops restarted
    with each pass's iterator, so every epoch drew the same flips at each batch position."""
    keras.utils.set_random_seed(42)  # as train does: with it, tf.data's old random ops repeated every pass
    cache = pattern_cache(n=24)

    def flips(passes) -> list[list[int]]:
        """Per pass, by batch position: 1 where the frame came out mirrored (the mask still its red channel)."""
        out = []
        for batch_list in passes:
            row = []
            for x, y in batch_list:
                frames = np.rint(x * 255).astype(np.uint8)
                np.testing.assert_array_equal(y, (frames[..., :1] > 128).astype(np.float32))
                for frame in frames:
                    n = [k for k in range(24) if np.array_equal(cache.images[k], frame)
                         or np.array_equal(cache.images[k][:, ::-1], frame)]
                    assert len(n) == 1
                    row.append(int(not np.array_equal(cache.images[n[0]], frame)))
            out.append(row)
        return out

    ds = make_dataset(cache, cache.ids, 4, training=True, augment=("flip",), seed=3)
    first, second = flips([batches(ds), batches(ds)])
    assert first != second, "each pass draws its own flips"
    assert 4 < sum(first) < 20 and 4 < sum(second) < 20
    resumed = make_dataset(cache, cache.ids, 4, training=True, augment=("flip",), seed=3, first_epoch=1)
    assert flips([batches(resumed)]) == [second]
    # validation frames are never augmented
    val = batches(make_dataset(cache, cache.ids, 4, training=False, augment=("flip",), seed=3))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in val]), cache.images / np.float32(255))


def test_crop_offsets_cover_every_position_and_stay_inside():
    tops, lefts = crop_offsets(np.random.default_rng(0), 4000, (20, 30), (16, 24))
    assert set(tops) == set(range(5)) and set(lefts) == set(range(7))


def test_crop_augmentation_moves_image_and_mask_together():
    """Blocks of 8 px whose mask is their red channel: after a flip and a rotation both still agree."""
    rng = np.random.default_rng(1)
    blocks = rng.random((4, 8, 10)) < 0.5
    masks = np.kron(blocks, np.ones((8, 8)))[..., None].astype(np.uint8)  # (4, 64, 80, 1)
    images = np.concatenate([masks * 255, rng.integers(0, 256, masks.shape), masks * 0], axis=3).astype(np.uint8)
    params = crop_augmentation(np.random.default_rng(2), 4, ("flip", "rotate", "contrast"), 0.02, 0.2)
    params[:, 0] = [0, 1, 0, 1]  # both with and without a flip
    x, y = augment_crops(images, masks, params)
    assert x.dtype == y.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and set(np.unique(y)) <= {0.0, 1.0}
    red = x[..., :1] > (x[..., :1].max() + x[..., :1].min()) / 2
    assert (red == (y > 0.5)).mean() > 0.97  # they differ only where bilinear and nearest round an edge apart
    pre_x, pre_y = images.copy(), masks.copy()
    pre_x[1::2], pre_y[1::2] = images[1::2, :, ::-1], masks[1::2, :, ::-1]  # flip first, then only rotate
    flipped = augment_crops(pre_x, pre_y, params * [0, 1, 1])
    # (OpenCV rounds source coordinates to 1/32 px: a composed warp lands a few noisy pixels elsewhere)
    assert (np.abs(x - flipped[0]) < 2 / 255).mean() > 0.99 and (y == flipped[1]).mean() > 0.99
    # contrast about each channel's mean, clipped to [0, 1]
    only = augment_crops(images, masks, np.array([[0, 0, 1.2]] * 4))[0]
    f = images / 255.0
    mean = f.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(only, np.clip((f - mean) * 1.2 + mean, 0, 1), atol=1e-6)


def test_validation_data_stays_whole_frames():
    cache = pattern_cache()
    (x, y), *_ = batches(make_dataset(cache, cache.ids, 4, training=False, crop=(16, 24)))
    assert x.shape[1:3] == (40, 56) and y.shape[1:3] == (40, 56)


@pytest.mark.parametrize("hold", [False, True])
def test_crops_decoded_every_epoch_equal_crops_of_the_cache(synth_dir, tmp_path, hold):
    """`--cache none` (and `--cache memory`) cut the same windows from the same pixels as the on-disk cache."""
    ds = open_dataset(synth_dir)
    ids, geom = ds.train_ids[:5], Geometry(64, 96, "pad")
    cached = build_cache(ds, ids, geom, "area", tmp_path / "cache")
    lazy = streaming(ds, ids, geom, "area", hold=hold)
    for epoch in range(2):  # the second pass of `hold` decodes from the bytes held in memory
        a = batches(make_dataset(cached, ids, 2, training=True, seed=1, crop=(32, 32), first_epoch=epoch))
        b = batches(make_dataset(lazy, ids, 2, training=True, seed=1, crop=(32, 32), first_epoch=epoch))
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xa.shape[1:3] == (32, 32)
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert (lazy.held is not None and sorted(lazy.held) == sorted(ids)) == hold


def test_crop_config_is_checked_recorded_and_old_configs_still_load(tmp_path):
    cfg = preset("tiny", crop=(16, 24))
    assert cfg.train_size == (16, 24) and cfg.size == (32, 48)
    assert cfg.eval_batch == 1  # batch 4 of 16x24 crops -> 4 * 384 // 1536 = 1 whole 32x48 frame
    d = cfg.to_json()
    assert d["crop"] == [16, 24]
    assert TrainConfig.from_json(json.loads(json.dumps(d))) == cfg
    old = preset("tiny").to_json()
    del old["crop"]  # a config.json written before crops existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_config(tmp_path / "config.json").crop is None
    assert preset("tiny", crop=parse_crop("none")).crop is None and parse_crop("16x24") == (16, 24)
    with pytest.raises(UserError, match="crop 18x24 is not a multiple of 4"):
        preset("tiny", crop=(18, 24))
    with pytest.raises(UserError, match="crop 32x64 is larger than the frame 32x48"):
        preset("tiny", crop=(32, 64))
    with pytest.raises(UserError, match="expected HEIGHTxWIDTH"):
        parse_crop("big")


def test_a_crop_trained_fold_validates_and_scores_on_whole_frames(synth_dir, tmp_path):
    from competition.scoring.score import score_fold
    cfg = preset("tiny", crop=(16, 24), epochs=2, patience=5, k=3)
    run = tmp_path / "r"
    summary = train(cfg, str(synth_dir), run, 0, None, hold=True)  # `--cache memory`: no cache on disk
    out = run / "fold0"
    assert summary["epochs"] == 2 and summary["val_images"] > 0
    assert json.loads((out / "config.json").read_text())["crop"] == [16, 24]
    ids, probs = load_oof(out / "oof.npz")
    assert probs.shape == (summary["val_images"], 32, 48)  # the whole frame, not the crop
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert model.input_shape == (None, None, None, 3)
    assert model.predict(np.zeros((1, 32, 48, 3), np.float32), verbose=0).shape == (1, 32, 48, 1)
    score = score_fold(run, 0, str(synth_dir), tta="none", worst=1)
    assert score["images"] == len(ids) and 0 <= score["dice_mean"] <= 1
