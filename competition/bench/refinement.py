"""Benchmark section 10. Guided refinement: what refining the upsampled probability with the photo costs."""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..base import rle
from ..base.console import bar
from ..base.geometry import Geometry
from ..config import preset
from ..costs.facts import TEST_IMAGES
from ..data.folds import assign_folds
from ..data.layout import open_dataset
from ..inference.upsample import EPS, radius_for
from ..models.refiner import build_refiner
from ..models.runtime import cpu_has_bf16
from ..models.saving import save_model
from .common import Budget, Inputs, figure, interleaved, median, opencv_threads, section
from .postprocess import dice, probability_map

TARGET_MS = 30.0  # per test image on one core: 100,064 images then cost under an hour of one core


# --- the baseline: the guided filter as it was before issue 36 (main at ea8a0ca), timed beside today's -------------
def _baseline_box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def baseline_guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float = EPS) -> np.ndarray:
    """refine.guided_filter before issue 36: float32 box filters, the 3x3 inverse in closed form in float64."""
    guide = guide.astype(np.float32, copy=False)
    p = p.astype(np.float32, copy=False)
    mean = [_baseline_box(guide[..., c], r) for c in range(3)]
    mean_p = _baseline_box(p, r)
    cov_p = [(_baseline_box(guide[..., c] * p, r) - mean[c] * mean_p).astype(np.float64) for c in range(3)]
    var = {(i, j): (_baseline_box(guide[..., i] * guide[..., j], r) - mean[i] * mean[j]).astype(np.float64)
           for i in range(3) for j in range(i, 3)}
    a, b, c = var[0, 0] + eps, var[0, 1], var[0, 2]
    d, e, f = var[1, 1] + eps, var[1, 2], var[2, 2] + eps
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d  # the adjugate of [[a b c] [b d e] [c e f]]
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    det = np.where(np.abs(det) > 1e-30, det, np.inf)  # a singular window: no slope, the window's mean
    slope = [((i00 * cov_p[0] + i01 * cov_p[1] + i02 * cov_p[2]) / det).astype(np.float32),
             ((i01 * cov_p[0] + i11 * cov_p[1] + i12 * cov_p[2]) / det).astype(np.float32),
             ((i02 * cov_p[0] + i12 * cov_p[1] + i22 * cov_p[2]) / det).astype(np.float32)]
    offset = mean_p - sum(s * m for s, m in zip(slope, mean))
    q = _baseline_box(offset, r) + sum(_baseline_box(s, r) * guide[..., k] for k, s in enumerate(slope))
    return np.nan_to_num(q, nan=0.0, posinf=1.0, neginf=0.0)


def baseline_refined_native_u8(prob: np.ndarray, geometry: Geometry, guide: np.ndarray) -> np.ndarray:
    """refine.refined_native_u8 before issue 36 (without the refiner net), on `baseline_guided_filter`."""
    gh, gw = guide.shape[:2]
    p = geometry.from_model(prob.astype(np.float32, copy=False), size=(gh, gw))
    q = baseline_guided_filter(guide.astype(np.float32) / 255.0, p, radius_for(geometry, (gh, gw)))
    q8 = cv2.convertScaleAbs(np.clip(q, 0.0, 1.0), alpha=255.0)
    if (gh, gw) == geometry.native:
        return q8
    return cv2.resize(q8, (geometry.native[1], geometry.native[0]), interpolation=cv2.INTER_LINEAR)


def coarse_map(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The mask seen at 1/8 of the model size, blown back up to it: an outline a model pixel or two off, the
    kind of error the refinement is for (tests/test_refine.py measures the same on the fixtures)."""
    h, w = geometry.height, geometry.width
    small = cv2.resize(mask.astype(np.float32), (w // 8, h // 8), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def noisy_map(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """A model-like probability: the true mask area-shrunk to the model size, blurred (sigma 1 px) and with mild
    noise (sigma 0.05, clipped to 0..1), float32."""
    p = probability_map(mask, geometry) + rng.normal(0.0, 0.05, (geometry.height, geometry.width))
    return np.clip(p, 0.0, 1.0).astype(np.float32)


def _masks_both_ways(prob: np.ndarray, geometry: Geometry, guide: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The native 0/1 masks (threshold 0.5) of today's refinement and of the baseline's, from the same guide."""
    from ..inference.upsample import refined_native_u8, threshold_native
    return (threshold_native(refined_native_u8(prob, geometry, guide), 0.5),
            threshold_native(baseline_refined_native_u8(prob, geometry, guide), 0.5))


def compare_with_baseline(data_dirs: list[str | Path], fold: int = 0, k: int = 5, seed: int = 42,
                          presets: tuple[str, ...] = ("cpu", "demo")) -> dict:
    """Today's guided filter against the baseline's on every real photo of `data_dirs`, per preset's geometry and
    guide: the share of equal native pixels and the mean dice of both against the true mask, over all photos and
    over car-grouped fold `fold` (of `k`, as `assign_folds` draws them with `seed`)."""
    from ..base.images import decode_jpeg
    from ..inference.upsample import guide_reduction
    where = {i: ds for ds in map(open_dataset, data_dirs) for i in ds.train_ids}
    folds = assign_folds(list(where), k, seed)
    ids = sorted(where)
    out: dict = {"photos": len(ids), "fold": fold, "k": k, "fold_seed": seed, "presets": {}}
    for name in presets:
        cfg = preset(name)
        geometry = Geometry(cfg.height, cfg.width, cfg.fit)
        reduction = guide_reduction(geometry)
        rng = np.random.default_rng(0)
        per_photo = {}  # id -> (equal pixels, pixels, dice today, dice baseline)
        for image_id in bar(ids, desc=f"{name}: today's filter vs the baseline"):
            ds = where[image_id]
            true = ds.read_mask(image_id)
            guide = decode_jpeg(ds.read_train_image(image_id), image_id, reduction)
            new, old = _masks_both_ways(noisy_map(true, geometry, rng), geometry, guide)
            per_photo[image_id] = (int((new == old).sum()), new.size, dice(new, true), dice(old, true))
        summary = {"model": [cfg.height, cfg.width], "guide": list(guide.shape[:2])}
        for label, chosen in (("all", ids), (f"fold {fold}", [i for i in ids if folds[i] == fold])):
            rows = [per_photo[i] for i in chosen]
            today, base = statistics.mean(r[2] for r in rows), statistics.mean(r[3] for r in rows)
            summary[label] = {"photos": len(rows), "equal_pixels": sum(r[0] for r in rows) / sum(r[1] for r in rows),
                              "photos_not_identical": sum(r[0] != r[1] for r in rows),
                              "dice": {"today": today, "baseline": base}, "dice_difference": today - base,
                              "max_abs_dice_difference_per_photo": max(abs(r[2] - r[3]) for r in rows)}
        out["presets"][name] = summary
    return out


def bench_refinement(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    from ..base.images import decode_jpeg
    from ..inference.upsample import guide_reduction, postprocess, refined_native_u8, threshold_native, to_native_mask
    real = bool(inputs.real_masks)
    masks = inputs.real_masks or inputs.synth_masks
    photos_of = inputs.train if real else inputs.synth
    photos = {i: photos_of.read_train_image(i) for i in masks}  # in memory: the disk is not what is timed
    cfg = preset("cpu")
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    reduction = guide_reduction(geometry)

    def refined(prob: np.ndarray, image_id: str, net: Callable | None = None) -> np.ndarray:
        guide = decode_jpeg(photos[image_id], image_id, reduction)
        return threshold_native(refined_native_u8(prob, geometry, guide, net), 0.5)

    rows, data, figures = [], {}, []
    for kind, make in (("soft true mask", probability_map), ("coarse outline", coarse_map)):
        probs = {i: make(m, geometry) for i, m in masks.items()}
        sink: list[int] = []

        def ours() -> None:
            for image_id, p in probs.items():
                sink.append(len(rle.encode(refined(p, image_id))))

        def plain() -> None:
            for image_id, p in probs.items():
                sink.append(len(postprocess(p, geometry, 0.5)))
        with opencv_threads(1):
            times = interleaved({"refined": ours, "plain": plain}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(probs) for k, v in times.items()}
        cost = ms["refined"] / ms["plain"]
        d_refined = statistics.mean(dice(refined(probs[i], i), masks[i]) for i in probs)
        d_plain = statistics.mean(dice(to_native_mask(probs[i], geometry, 0.5), masks[i]) for i in probs)
        extra_core_h = (ms["refined"] - ms["plain"]) * TEST_IMAGES / 3.6e6
        data[kind] = {"images": len(probs), "ms_per_image": ms, "raw_s": times, "extra_core_hours_test": extra_core_h,
                      "dice_vs_true_mask": {"refined": d_refined, "plain": d_plain}}
        rows.append([kind, f"{ms['refined']:.1f}", f"{ms['plain']:.1f}", f"{cost:.1f}x", f"{extra_core_h:.2f}",
                     f"{d_refined:.5f}", f"{d_plain:.5f}"])
        if kind == "coarse outline":
            figures.append(figure(f"Guided refinement of one {geometry.height}x{geometry.width} map (cpu)",
                                  f"{ms['refined']:.1f} ms/image", f"{ms['plain']:.1f} ms/image (unrefined)",
                                  cost, "x the unrefined cost", "(none: the filter's own is the next figure)",
                                  None))
    filter_rows, data["filter vs before issue 36"], filter_figures = _bench_filter_against_baseline(
        masks, photos, geometry, reduction, plan)
    rows += filter_rows
    figures += filter_figures
    net_rows, net_data, net_figures = _bench_refiner_net(masks, geometry, refined, plan)
    rows += net_rows
    data["refiner net"] = net_data
    figures += net_figures
    sec = section(
        "10. Guided refinement: its cost per test image (1 thread)",
        f"`cpu`'s post-processing of a {geometry.height}x{geometry.width} probability with `refine=\"guided\"` "
        f"(the photo's JPEG decoded at 1/{reduction}, `refine.refined_native_u8`, threshold 0.5, `rle.encode`) "
        f"against the same without it (`inference.upsample.postprocess`: bilinear resize, threshold, `rle.encode`), on "
        f"{len(masks)} {'real' if real else 'synthetic'} photos and masks (JPEG bytes in memory). Two kinds of "
        f"probability: the true mask area-shrunk to the model size and blurred (sigma 1 px, as section 2), and a "
        f"coarse outline (the mask seen at 1/8 of the model size). OpenCV on 1 thread; median of {plan.rounds} "
        f"rounds. 'extra core-hours' is the difference times Kaggle's {TEST_IMAGES:,} test images. Then the "
        f"guided filter alone (`inference.upsample.guided_filter`, the guide decoded beforehand) against a copy of the filter "
        f"as it was before issue 36 (float64 closed-form inverse, `baseline_guided_filter` here), interleaved in "
        f"this run on a noisy soft mask (sigma 0.05 added), with the share of native pixels on which their "
        f"thresholded masks agree; its target is {TARGET_MS:g} ms an image on one core. Last, "
        f"`refine=\"net\"` (`cpu`'s default): the refiner net (models/refiner.py) corrects the coarse outline at "
        f"the guide's size before the filter, in float32 and, on a CPU with bfloat16 instructions, in bfloat16 "
        f"(what a mixed-precision run's refiner predicts in there); the net runs on TensorFlow's threads (all "
        f"cores), OpenCV on one. Its time does not depend on its weights: an untrained net (which returns its "
        f"input) is timed, so its rows have no dice.",
        ["probability", "refined ms/image", "unrefined ms/image", "cost", "extra core-hours (test set)",
         "dice refined", "dice unrefined"], rows,
        notes=["The dice columns say what the filter does, not how a trained net gains: it pulls an outline that "
               "is a model pixel or two off onto the photo's edges (coarse outline), and blurs a nearly perfect one "
               "where the car's edge has no colour contrast (soft true mask). On real held-out photos `cpu`'s "
               "nets gain +0.002 native dice (docs/results.md, Refinement)."],
        data=data)
    return sec, figures


def _bench_filter_against_baseline(masks: dict[str, np.ndarray], photos: dict[str, bytes], geometry: Geometry,
                                   reduction: int, plan: Budget) -> tuple[list[list], dict, list[dict]]:
    """The guided filter alone, today's against the baseline's (before issue 36), interleaved on one thread, and
    whether their native masks agree."""
    from ..base.images import decode_jpeg
    from ..inference.upsample import guided_filter
    guides = {i: decode_jpeg(photos[i], i, reduction) for i in masks}  # decoded beforehand: only the filter is timed
    gh, gw = next(iter(guides.values())).shape[:2]
    r = radius_for(geometry, (gh, gw))
    rng = np.random.default_rng(0)
    probs = {i: noisy_map(m, geometry, rng) for i, m in masks.items()}
    ps = {i: geometry.from_model(prob, size=(gh, gw)) for i, prob in probs.items()}  # as refined_native_u8 resizes
    unit = {i: g.astype(np.float32) / 255.0 for i, g in guides.items()}  # the baseline's guide, made as it made it
    sink: list[float] = []

    def today() -> None:
        for i, p in ps.items():
            sink.append(float(guided_filter(guides[i], p, r)[0, 0]))

    def baseline() -> None:
        for i, p in ps.items():
            sink.append(float(baseline_guided_filter(unit[i], p, r)[0, 0]))
    today()  # the first call of each pays for page faults of fresh memory: not timed
    baseline()
    with opencv_threads(1):
        times = interleaved({"today": today, "baseline": baseline}, plan.rounds)
    ms = {k: 1e3 * median(v) / len(ps) for k, v in times.items()}
    equal = pixels = 0
    d_today, d_base = [], []
    for i, prob in probs.items():
        new, old = _masks_both_ways(prob, geometry, guides[i])
        equal, pixels = equal + int((new == old).sum()), pixels + new.size
        d_today.append(dice(new, masks[i]))
        d_base.append(dice(old, masks[i]))
    saved_h = (ms["today"] - ms["baseline"]) * TEST_IMAGES / 3.6e6
    data = {"images": len(ps), "guide": [gh, gw], "radius": r, "ms_per_image": ms, "raw_s": times,
            "target_ms": TARGET_MS, "met": ms["today"] <= TARGET_MS, "equal_pixels": equal / pixels,
            "dice_vs_true_mask": {"today": statistics.mean(d_today), "baseline": statistics.mean(d_base)},
            "extra_core_hours_test": saved_h}
    rows = [[f"noisy soft mask, the guided filter alone on the {gh}x{gw} guide: today's vs before issue 36",
             f"{ms['today']:.1f}", f"{ms['baseline']:.1f} (the filter before issue 36)",
             f"{ms['today'] / ms['baseline']:.2f}x", f"{saved_h:.2f}", f"{data['dice_vs_true_mask']['today']:.5f}",
             f"{data['dice_vs_true_mask']['baseline']:.5f} (before; native pixels equal: {equal / pixels:.6%})"]]
    figures = [figure(f"Guided filter on cpu's {gh}x{gw} guide: today's vs before issue 36",
                      f"{ms['today']:.1f} ms/image", f"{ms['baseline']:.1f} ms/image (the filter before issue 36)",
                      ms["baseline"] / ms["today"], "x faster", f"<= {TARGET_MS:g} ms/image, 1 thread",
                      bool(ms["today"] <= TARGET_MS))]
    return rows, data, figures


def _bench_refiner_net(masks: dict[str, np.ndarray], geometry: Geometry,
                       refined: Callable[..., np.ndarray], plan: Budget) -> tuple[list[list], dict, list[dict]]:
    """The refiner net's share: refine="net" (net, then the guided filter) against refine="guided", per policy."""
    from ..inference.predictor import Refiner
    probs = {i: coarse_map(m, geometry) for i, m in masks.items()}
    rows, data, figures = [], {}, []
    for policy in ("float32", "mixed_bfloat16") if cpu_has_bf16() else ("float32",):
        model = build_refiner(policy=policy)
        with tempfile.TemporaryDirectory() as tmp:  # what predict calls: a Refiner, which digests its saved file
            path = Path(tmp) / "refiner.keras"
            save_model(model, path)
            net = Refiner(model, path)
        sink: list[int] = []

        def with_net() -> None:
            for image_id, p in probs.items():
                sink.append(len(rle.encode(refined(p, image_id, net))))

        def guided() -> None:
            for image_id, p in probs.items():
                sink.append(len(rle.encode(refined(p, image_id))))
        with_net()  # the first call builds the net's graph for this size: not timed
        with opencv_threads(1):
            times = interleaved({"net": with_net, "guided": guided}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(probs) for k, v in times.items()}
        extra_h = (ms["net"] - ms["guided"]) * TEST_IMAGES / 3.6e6
        words = "bfloat16" if policy == "mixed_bfloat16" else "float32"
        data[words] = {"images": len(probs), "ms_per_image": ms, "raw_s": times, "extra_hours_test": extra_h}
        rows.append([f"coarse outline, refiner net ({words}) then the filter", f"{ms['net']:.1f}",
                     f"{ms['guided']:.1f} (the filter alone)", f"{ms['net'] / ms['guided']:.1f}x", f"{extra_h:.2f}",
                     "-", "-"])
        figures.append(figure(f"Refiner net + guided refinement of one {geometry.height}x{geometry.width} map "
                              f"(cpu, {words})", f"{ms['net']:.1f} ms/image",
                              f"{ms['guided']:.1f} ms/image (guided filter alone)", ms["net"] / ms["guided"],
                              "x the filter's cost", "(none)", None))
    return rows, data, figures
