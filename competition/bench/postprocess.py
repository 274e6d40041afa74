"""Benchmark section 2. Post-processing."""
from __future__ import annotations

import io
import statistics

import cv2
import numpy as np

from .. import NATIVE_SHAPE
from ..base import rle
from ..base.geometry import Geometry
from ..config import preset
from .common import Budget, Inputs, figure, interleaved, median, opencv_threads, section


def probability_map(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A model-like probability map of a native mask at model resolution (soft edges), float32."""
    small = geometry.to_model(mask.astype(np.float32), "area")
    small = small[..., 0] if small.ndim == 3 else small
    return np.clip(cv2.GaussianBlur(small, (0, 0), 1.0), 0.0, 1.0).astype(np.float32)


def naive_native_mask(prob: np.ndarray, geometry: Geometry, threshold: float) -> np.ndarray:
    """The naive order: threshold at model resolution, crop any padding, nearest resize to native."""
    top, left = geometry.offset
    ih, iw = geometry.inner
    binary = (prob[top:top + ih, left:left + iw] > threshold).astype(np.uint8)
    if binary.shape == NATIVE_SHAPE:
        return binary
    return cv2.resize(binary, (NATIVE_SHAPE[1], NATIVE_SHAPE[0]), interpolation=cv2.INTER_NEAREST)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def bench_postprocess(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    from ..inference.upsample import postprocess, to_native_mask
    masks = inputs.real_masks or inputs.synth_masks
    rows, data, figures = [], {}, []
    sizes = {}
    for name in ("article-unet", "unet", "unet-1280"):
        cfg = preset(name)
        sizes.setdefault((cfg.height, cfg.width, cfg.fit), name)
    for (h, w, fit), name in sizes.items():
        geometry = Geometry(h, w, fit)
        probs = {i: probability_map(m, geometry) for i, m in masks.items()}
        out = io.StringIO()

        def ours() -> None:
            for image_id, p in probs.items():
                out.write(f"{image_id}.jpg,{postprocess(p, geometry, 0.5)}\n")

        def naive() -> None:
            for image_id, p in probs.items():
                out.write(f"{image_id}.jpg,{rle.encode_idiom(naive_native_mask(p, geometry, 0.5))}\n")
        with opencv_threads(1):
            times = interleaved({"ours": ours, "naive": naive}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(probs) for k, v in times.items()}
        ratio = ms["naive"] / ms["ours"]
        d_ours = statistics.mean(dice(to_native_mask(probs[i], geometry, 0.5), masks[i]) for i in probs)
        d_naive = statistics.mean(dice(naive_native_mask(probs[i], geometry, 0.5), masks[i]) for i in probs)
        label = f"{h}x{w} {fit} ({name})"
        data[label] = {"images": len(probs), "ms_per_image": ms, "raw_s": times,
                       "dice_vs_true_mask": {"ours": d_ours, "naive": d_naive}}
        rows.append([label, f"{ms['ours']:.2f}", f"{ms['naive']:.2f}", f"**{ratio:.1f}x**",
                     f"{d_ours:.5f}", f"{d_naive:.5f}"])
        figures.append(figure(f"Post-process one image from {h}x{w} ({name})", f"{ms['ours']:.2f} ms/image",
                              f"{ms['naive']:.2f} ms/image (threshold, nearest resize, idiom)", ratio, "x faster",
                              "<= 3 ms/image, 1 thread", ms["ours"] <= 3.0))
    sec = section("2. Post-processing one test image (1 thread)",
                  f"Probability maps made from {len(masks)} {'real' if inputs.real_masks else 'synthetic'} masks "
                  f"(area-downscaled to the model size, Gaussian blur sigma 1 px). Ours: `predict.postprocess` "
                  f"(uint8 quantise, bilinear resize to 1918x1280, threshold, `rle.encode`) and the row written to "
                  f"an in-memory buffer. Naive: threshold at model resolution, nearest resize, `rle.encode_idiom`, "
                  f"same buffer. OpenCV on 1 thread; median of {plan.rounds} rounds. Dice columns: mean dice of "
                  f"each order's native mask against the true mask (quality, not speed).",
                  ["model size", "ours ms/image", "naive ms/image", "speed-up", "dice ours", "dice naive"],
                  rows, data=data)
    return sec, figures
