"""The guided refinement: it snaps an upsampled probability to the photo's edges, on drawn and real photos,
survives flat photos, and is what score and predict use when a run (or --refine) asks for it."""
import json

import cv2
import numpy as np
import pytest

from competition.base import rle
from competition.config import TrainConfig, preset
from competition.data.layout import open_dataset
from competition.base.errors import UserError
from competition.base.geometry import Geometry
from competition.base.images import decode_jpeg
from competition.inference.predictor import Predictor, load_models
from competition.inference.upsample import guide_reduction, guided_filter, radius_for, refined_native_u8, threshold_native, to_native_u8
from competition.inference.predict import predict
from competition.scoring.metrics import dice
from competition.scoring.score import score_fold


def _photo_and_mask(native: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A drawn 'car' (a dark body with a thin antenna) on a light, graded wall, and its true mask."""
    h, w = native
    wall = np.linspace(170, 230, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h * 3 // 5), (w * 3 // 8, h // 4), 0, 0, 360, 1, -1)
    cv2.line(mask, (w * 2 // 3, h * 3 // 5), (w * 3 // 4, h // 8), 1, 2)
    photo = np.where(mask[..., None] > 0, np.float32([40, 60, 90]), wall)
    return np.clip(photo + np.random.default_rng(0).normal(0, 3, photo.shape), 0, 255).astype(np.uint8), mask


def test_refinement_snaps_a_perfect_low_resolution_prediction_to_the_drawn_edges():
    native = (320, 480)
    photo, mask = _photo_and_mask(native)
    g = Geometry(40, 60, native=native)  # 8x below native, as 160x240 is below 1918x1280
    prob = g.to_model(mask[..., None].astype(np.float32), "area")[..., 0]  # the best a 40x60 net can say
    red = guide_reduction(g)
    assert red == 4  # the guide is twice the model's size
    guide = cv2.resize(photo, (native[1] // red, native[0] // red), interpolation=cv2.INTER_AREA)
    plain = dice(mask, threshold_native(to_native_u8(prob, g), 0.5))
    refined_map = refined_native_u8(prob, g, guide)
    refined = dice(mask, threshold_native(refined_map, 0.5))
    assert refined_map.shape == native and refined_map.dtype == np.uint8
    assert 1 - refined < 0.8 * (1 - plain), (plain, refined)  # a fifth of the upsampling's error gone, at least


def _guided_filter_by_hand(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s colour guided filter, one window at a time with numpy's solver (reflected borders)."""
    h, w = p.shape
    pad = lambda x: np.pad(x, [(r, r), (r, r)] + [(0, 0)] * (x.ndim - 2), mode="symmetric")
    g, q = pad(guide.astype(np.float64)), pad(p.astype(np.float64))
    slope, offset = np.zeros((h, w, 3)), np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            wg = g[y:y + 2 * r + 1, x:x + 2 * r + 1].reshape(-1, 3)
            wp = q[y:y + 2 * r + 1, x:x + 2 * r + 1].ravel()
            mu, mp = wg.mean(0), wp.mean()
            cov = (wg - mu).T @ (wg - mu) / len(wp) + eps * np.eye(3)
            slope[y, x] = np.linalg.solve(cov, ((wg - mu) * (wp - mp)[:, None]).mean(0))
            offset[y, x] = mp - slope[y, x] @ mu
    mean_slope = np.stack([pad(slope[..., c]) for c in range(3)], -1)
    mean_offset = pad(offset)
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = (mean_slope[y:y + 2 * r + 1, x:x + 2 * r + 1].reshape(-1, 3).mean(0) @ guide[y, x]
                         + mean_offset[y:y + 2 * r + 1, x:x + 2 * r + 1].mean())
    return out


def test_the_closed_form_filter_matches_one_solved_window_at_a_time():
    """The adjugate inverse and the box filters against numpy's solver per window, on a nearly flat, noisy photo
    (grey-ish colours: the covariance is close to singular) with a soft step in the probability."""
    rng = np.random.default_rng(3)
    h, w, r = 14, 18, 2
    base = np.linspace(0.4, 0.6, w)[None, :, None].repeat(h, 0).repeat(3, 2)
    guide = (base + rng.normal(0, 0.01, (h, w, 3))).astype(np.float32)
    guide[:, w // 2:] += np.float32([0.05, 0.04, 0.06])  # a faint coloured edge
    p = np.clip(np.linspace(-1, 2, w)[None, :].repeat(h, 0) + rng.normal(0, 0.05, (h, w)), 0, 1).astype(np.float32)
    np.testing.assert_allclose(guided_filter(guide, p, r, 1e-4), _guided_filter_by_hand(guide, p, r, 1e-4),
                               atol=2e-4)


def test_the_float32_filter_matches_the_one_before_issue_36_on_drawn_and_noisy_guides():
    """Today's filter (float32, LDL^T) against the bench's copy of the former one (float64 closed-form inverse):
    a uint8 guide is read as /255, and a grey, nearly flat guide (a close-to-singular covariance) is no worse."""
    from competition.bench.refinement import baseline_guided_filter
    rng = np.random.default_rng(7)
    photo, mask = _photo_and_mask((120, 180))
    grey = np.clip(np.linspace(120, 135, 180)[None, :, None] + rng.normal(0, 0.7, (120, 180, 1)), 0, 255)
    p = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 3) + rng.normal(0, 0.05, mask.shape).astype(np.float32)
    for guide in (photo, grey.repeat(3, 2).astype(np.uint8)):
        for r in (1, 4, 7):
            expected = baseline_guided_filter(guide.astype(np.float32) / 255.0, p, r)
            np.testing.assert_allclose(guided_filter(guide, p, r), expected, atol=1e-4)
            np.testing.assert_allclose(guided_filter(guide.astype(np.float32) / 255.0, p, r), expected, atol=1e-4)


def test_the_filter_gives_real_photos_the_masks_it_gave_before_issue_36(fixtures_dir):
    """cpu's 192x288 geometry and 1/2 guide on 3 real photos: the native masks agree with the former
    filter's on all but a handful of pixels (rounding to 8 bits right at 0.5)."""
    from competition.bench.refinement import baseline_guided_filter, baseline_refined_native_u8, noisy_map
    ds = open_dataset(fixtures_dir)
    cfg = preset("cpu")
    g = Geometry(cfg.height, cfg.width, cfg.fit)
    rng = np.random.default_rng(0)
    for image_id in ds.train_ids[::16]:
        true = ds.read_mask(image_id)
        guide = decode_jpeg(ds.read_train_image(image_id), image_id, guide_reduction(g))
        assert guide.shape[:2] == (640, 959)
        prob = noisy_map(true, g, rng)
        p = g.from_model(prob, size=guide.shape[:2])
        r = radius_for(g, guide.shape[:2])
        np.testing.assert_allclose(guided_filter(guide, p, r),
                                   baseline_guided_filter(guide.astype(np.float32) / 255.0, p, r), atol=1e-4)
        new = threshold_native(refined_native_u8(prob, g, guide), 0.5)
        old = threshold_native(baseline_refined_native_u8(prob, g, guide), 0.5)
        assert (new != old).sum() <= 1e-5 * new.size, image_id
        assert abs(dice(true, new) - dice(true, old)) < 1e-5, image_id


def test_the_filters_scratch_planes_carry_nothing_between_calls_or_threads():
    """guided_filter keeps its working planes per thread between calls: a result must not depend on the call
    before it (another size, another guide) nor on calls running in other threads, and it must not be scratch
    memory the next call overwrites."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(5)
    photo, mask = _photo_and_mask((180, 240))
    p = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2)
    other = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    first = guided_filter(photo, p, 3)
    kept = first.copy()
    guided_filter(other, rng.random((60, 80), dtype=np.float32), 2)  # another size
    guided_filter(photo[::-1].copy(), p[::-1].copy(), 3)  # the same size, other values
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(guided_filter(photo, p, 3), first)
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(guided_filter, photo if n % 2 == 0 else photo[::-1].copy(), p, 3) for n in range(64)]
        for n, job in enumerate(jobs):
            if n % 2 == 0:
                np.testing.assert_array_equal(job.result(), first)


def test_a_filter_without_regularisation_or_of_another_size_is_refused():
    with pytest.raises(ValueError, match="eps must be > 0"):
        guided_filter(np.ones((8, 8, 3), np.float32), np.zeros((8, 8), np.float32), 1, eps=0.0)
    with pytest.raises(ValueError, match="expected"):
        guided_filter(np.ones((8, 9, 3), np.uint8), np.zeros((8, 8), np.float32), 1)


def test_a_flat_photo_leaves_the_probability_smoothed_and_finite():
    """A clipped white wall makes every window's colour covariance singular: no NaN, just the window mean."""
    p = np.zeros((60, 90), np.float32)
    p[:, 45:] = 1.0
    q = guided_filter(np.ones((60, 90, 3), np.float32), p, 4)
    assert np.isfinite(q).all()
    assert q[:, :30].max() < 1e-6 and q[:, 60:].min() > 1 - 1e-6  # far from the step: unchanged
    assert 0 < q[30, 45] < 1  # at the step: smoothed


def test_padded_frames_refine_only_the_photo_inside_the_padding():
    native = (320, 480)
    photo, mask = _photo_and_mask(native)
    g = Geometry(64, 64, fit="pad", native=native)  # the photo is 43x64 inside the padding
    prob = g.to_model(mask[..., None].astype(np.float32), "area")[..., 0]
    red = guide_reduction(g)
    guide = cv2.resize(photo, (-(-native[1] // red), -(-native[0] // red)), interpolation=cv2.INTER_AREA)
    assert radius_for(g, guide.shape[:2]) >= 1
    refined = refined_native_u8(prob, g, guide)
    plain = to_native_u8(prob, g)
    assert refined.shape == native
    assert dice(mask, refined > 127) > dice(mask, plain > 127) + 0.002


def test_refinement_pulls_a_coarse_outline_to_real_photos_edges(fixtures_dir):
    """A prediction whose outline is a few model pixels off, as a small net's is: the true mask seen at 20x30 and
    blown up to 160x240. Scored at native 1918x1280, snapping it to the real photo's edges gains on every photo.
    (A perfect 160x240 mask loses about 0.003 instead: docs/results.md, "Refinement".)"""
    ds = open_dataset(fixtures_dir)
    g = Geometry(160, 240)
    plain, refined = [], []
    for image_id in ds.train_ids[::6]:  # 8 photos of 8 cars
        true = ds.read_mask(image_id)
        coarse = cv2.resize(true.astype(np.float32), (30, 20), interpolation=cv2.INTER_AREA)
        prob = cv2.resize(coarse, (240, 160), interpolation=cv2.INTER_LINEAR)
        guide = decode_jpeg(ds.read_train_image(image_id), image_id, guide_reduction(g))
        plain.append(dice(true, threshold_native(to_native_u8(prob, g), 0.5)))
        refined.append(dice(true, threshold_native(refined_native_u8(prob, g, guide), 0.5)))
    plain, refined = np.array(plain), np.array(refined)
    assert refined.mean() > plain.mean() + 0.001, (plain.mean(), refined.mean())
    assert (refined > plain).sum() >= 7, (plain, refined)


def test_cpu_presets_refine_and_older_runs_do_not():
    assert preset("demo").refine == preset("demo").refine == "guided"
    assert preset("cpu").refine == "net" and preset("cpu").refiner_from == "training"
    assert preset("unet").refine == "none"
    old = {k: v for k, v in preset("cpu").to_json().items() if k != "refine"}  # a config.json from before
    assert TrainConfig.from_json(old).refine == "none"
    with pytest.raises(UserError, match="refinement 'sharp'"):
        preset("cpu", refine="sharp")


def test_score_and_predict_refine_when_asked(tiny_run, synth_dir, tmp_path):
    """score --refine guided scores what refined_native_u8 makes of each photo; predict writes other rows."""
    s = score_fold(tiny_run, 0, str(synth_dir), tta="none", worst=0, refine="guided")
    assert s["refine"] == "guided"
    assert json.loads((tiny_run / "fold0" / "score.json").read_text())["refine"] == "guided"
    cfg, _, models = load_models(tiny_run, [0])
    g = Geometry(cfg.height, cfg.width, cfg.fit)
    ds = open_dataset(synth_dir)
    table = {r.split(",")[0]: r.split(",") for r in (tiny_run / "fold0" / "scores.csv").read_text().splitlines()[1:]}
    image_id = sorted(table)[0][:-4]
    predictor = Predictor(models, g, "none", cfg.image_interp, "guided")
    x = predictor.load(ds.read_train_image(image_id), image_id)[None]
    prob = predictor(x)[0]
    guide = decode_jpeg(ds.read_train_image(image_id), image_id, guide_reduction(g))
    expected = dice(ds.read_mask(image_id), threshold_native(refined_native_u8(prob, g, guide), cfg.threshold))
    header = (tiny_run / "fold0" / "scores.csv").read_text().splitlines()[0].split(",")
    assert float(table[f"{image_id}.jpg"][header.index("dice")]) == pytest.approx(expected, abs=2e-6)
    plain = score_fold(tiny_run, 0, str(synth_dir), tta="none", worst=0)
    assert plain["refine"] == "none" and plain["dice_mean"] != s["dice_mean"]

    a = predict(tiny_run, str(synth_dir), tmp_path / "plain.csv", tta="none", limit=4)
    b = predict(tiny_run, str(synth_dir), tmp_path / "refined.csv", tta="none", limit=4, refine="guided")
    rows = dict(line.split(",") for line in b.read_text().splitlines()[1:])
    assert len(rows) == 4
    for image_id in ds.test_ids[:4]:  # each row refined with its own photo
        data = ds.read_test_image(image_id)
        p = predictor(predictor.load(data, image_id)[None])[0]
        native = refined_native_u8(p, g, decode_jpeg(data, image_id, guide_reduction(g)))
        assert rows[f"{image_id}.jpg"] == rle.encode(threshold_native(native, cfg.threshold)), image_id
    assert a.read_text() != b.read_text()


def test_a_threshold_tuned_with_refine_is_saved_with_it(tiny_run, synth_dir):
    """predict uses the tuned threshold with the refinement it was tuned under, not the run's former one."""
    from competition.config import load_config
    s = score_fold(tiny_run, 0, str(synth_dir), tta="none", worst=0, tune_threshold=True, refine="guided")
    for path in (tiny_run / "config.json", tiny_run / "fold0" / "config.json"):
        saved = load_config(path)
        assert (saved.refine, saved.threshold) == ("guided", s["best_threshold"])


def test_a_partial_submission_is_not_resumed_with_another_refinement(tiny_run, synth_dir, tmp_path, monkeypatch):
    import competition.inference.predict as predict_mod
    from competition.inference import writer
    from conftest import interrupt_call
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    real = predict_mod.to_native
    interrupt_call(monkeypatch, predict_mod, "to_native", 3)
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", tta="none")
    monkeypatch.setattr(predict_mod, "to_native", real)
    with pytest.raises(UserError, match="other settings"):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", tta="none", refine="guided")
