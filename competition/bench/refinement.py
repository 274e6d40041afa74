"""Benchmark section 10. Guided refinement: what refining the upsampled probability with the photo costs."""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .. import rle
from ..geometry import Geometry

from ..costs import TEST_IMAGES
from .common import (Budget, interleaved, median, opencv_threads, figure, section, Inputs)
from .postprocess import dice, probability_map

TARGET_MS = 30.0  # per test image on one core: 100,064 images then cost under an hour of one core


def coarse_map(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The mask seen at 1/8 of the model size, blown back up to it: an outline a model pixel or two off, the
    kind of error the refinement is for (tests/test_refine.py measures the same on the fixtures)."""
    h, w = geometry.height, geometry.width
    small = cv2.resize(mask.astype(np.float32), (w // 8, h // 8), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def bench_refinement(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    from ..config import preset
    from ..images import decode_jpeg
    from ..inference.upsample import (guide_reduction, postprocess, refined_native_u8, threshold_native,
                                      to_native_mask)
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
                                  cost, "x the unrefined cost", f"<= {TARGET_MS:g} ms/image, 1 thread",
                                  ms["refined"] <= TARGET_MS))
    net_rows, net_data, net_figures = _bench_refiner_net(masks, geometry, refined, plan)
    rows += net_rows
    data["refiner net"] = net_data
    figures += net_figures
    sec = section(
        "10. Guided refinement: its cost per test image (1 thread)",
        f"`cpu`'s post-processing of a {geometry.height}x{geometry.width} probability with `refine=\"guided\"` "
        f"(the photo's JPEG decoded at 1/{reduction}, `refine.refined_native_u8`, threshold 0.5, `rle.encode`) "
        f"against the same without it (`predict.postprocess`: bilinear resize, threshold, `rle.encode`), on "
        f"{len(masks)} {'real' if real else 'synthetic'} photos and masks (JPEG bytes in memory). Two kinds of "
        f"probability: the true mask area-shrunk to the model size and blurred (sigma 1 px, as section 2), and a "
        f"coarse outline (the mask seen at 1/8 of the model size). OpenCV on 1 thread; median of {plan.rounds} "
        f"rounds. 'extra core-hours' is the difference times Kaggle's {TEST_IMAGES:,} test images. Last, "
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


def _bench_refiner_net(masks: dict[str, np.ndarray], geometry: Geometry,
                       refined: Callable[..., np.ndarray], plan: Budget) -> tuple[list[list], dict, list[dict]]:
    """The refiner net's share: refine="net" (net, then the guided filter) against refine="guided", per policy."""
    from ..inference.predictor import Refiner
    from ..models.refiner import build_refiner
    from ..models.saving import save_model
    from ..runtime import cpu_has_bf16
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
