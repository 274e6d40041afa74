"""Upsampling to native 1918x1280: a model-resolution probability -> an 8-bit native map -> a 0/1 mask.

Plain (`to_native_u8`: quantise, resize bilinearly) or edge-aware: a guided filter snaps a low-resolution
probability map to the photo's own edges (`refined_native_u8`), after the refiner net where the run has one.

A 160x240 model's probability, blown up 8x to 1918x1280, has soft, blocky borders that ignore where the
car's outline really runs. The guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010) fits,
in every small window, the probability as a linear function of the photo's colours; averaged over the
windows, that carries the photo's edges into the probability. It runs on a 1/4-size decode of the JPEG
(twice the model's resolution for a 160x240 model), and the result is resized to native like any other
probability map. Measured on real photos (docs/results.md, "Refinement"): +0.002 native dice for `cpu`,
whose outline is a model pixel or two off; but a perfect 160x240 mask loses 0.003 through it (where the
outline has no colour edge it smooths, inside the car it picks up reflections), so score a much better net
both ways (`--refine none|guided`) before keeping it.

`refine="guided"` in a run's config turns it on for `predict`, `score`, `cv` and blends; "none" (the
default, and every run made before it existed) resizes the probability alone; "net" first corrects the
probability with a second-stage net (models/refiner.py, trained by refiner.py).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .. import rle
from ..geometry import Geometry
from ..images import reduction_for

EPS = 1e-4          # regularisation of the colour covariance (colours in 0..1): larger smooths flat regions more
MODEL_RADIUS = 2.0  # the window's radius in model pixels (4 guide pixels when the guide is 2x the model)


def to_native_u8(prob: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Model-resolution probability -> 8-bit probability (0..255) at native size, resized bilinearly.

    Resizing 8-bit probabilities is several times faster than float32, and the quantisation
    (1/255) only moves pixels whose probability is within 0.002 of the threshold.
    """
    return geometry.from_model(cv2.convertScaleAbs(prob, alpha=255.0))  # rounds and saturates to uint8


def threshold_native(native_u8: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 uint8 mask of the pixels whose 8-bit probability is above `threshold` * 255."""
    _, mask = cv2.threshold(native_u8, threshold * 255.0, 1, cv2.THRESH_BINARY)
    return mask


def to_native_mask(prob: np.ndarray, geometry: Geometry, threshold: float) -> np.ndarray:
    """Model-resolution probability -> native 0/1 uint8 mask: quantise, resize bilinearly, threshold."""
    return threshold_native(to_native_u8(prob, geometry), threshold)


def postprocess(prob: np.ndarray, geometry: Geometry, threshold: float,
                native: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
    """Probability map at model resolution -> RLE string of the native mask. `native` makes the 8-bit native map
    when the run refines it (`Predictor.native` for this image); by default it is resized alone."""
    if native is None:
        return rle.encode(to_native_mask(prob, geometry, threshold))
    return rle.encode(threshold_native(native(prob), threshold))


def guide_reduction(geometry: Geometry) -> int:
    """The JPEG reduction (1, 2, 4, 8) whose decode is about twice the model's resolution (at most native)."""
    ih, iw = geometry.inner
    return reduction_for((2 * ih, 2 * iw), geometry.native)


def radius_for(geometry: Geometry, guide_hw: tuple[int, int]) -> int:
    """The filter's radius in guide pixels: MODEL_RADIUS model pixels at the guide's scale (at least 1)."""
    return max(1, round(MODEL_RADIUS * guide_hw[0] / geometry.inner[0]))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float = EPS) -> np.ndarray:
    """He et al.'s colour guided filter: `p` (H, W) filtered with the edges of `guide` (H, W, 3, values 0..1).

    Window means are float32 box filters; the 3x3 colour covariance of each window is inverted in closed form
    in float64: in flat or clipped regions (a white wall) it is nearly singular, and float32 cancellation there
    turns into NaN."""
    guide = guide.astype(np.float32, copy=False)
    p = p.astype(np.float32, copy=False)
    mean = [_box(guide[..., c], r) for c in range(3)]
    mean_p = _box(p, r)
    cov_p = [(_box(guide[..., c] * p, r) - mean[c] * mean_p).astype(np.float64) for c in range(3)]
    var = {(i, j): (_box(guide[..., i] * guide[..., j], r) - mean[i] * mean[j]).astype(np.float64)
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
    q = _box(offset, r) + sum(_box(s, r) * guide[..., k] for k, s in enumerate(slope))
    return np.nan_to_num(q, nan=0.0, posinf=1.0, neginf=0.0)


def refined_native_u8(prob: np.ndarray, geometry: Geometry, guide: np.ndarray,
                      refiner: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Model-resolution probability + the photo decoded at `guide_reduction` (RGB uint8) -> 8-bit native map.

    The probability is resized to the guide (padding cropped, as `Geometry.from_model` does), corrected by the
    `refiner` net when given (`refine="net"`), filtered with the guide's edges, quantised to 8 bits
    and resized to native bilinearly, as `to_native_u8` is."""
    gh, gw = guide.shape[:2]
    p = geometry.from_model(prob.astype(np.float32, copy=False), size=(gh, gw))
    if refiner is not None:
        p = refiner(guide, p)
    q = guided_filter(guide.astype(np.float32) / 255.0, p, radius_for(geometry, (gh, gw)))
    q8 = cv2.convertScaleAbs(np.clip(q, 0.0, 1.0), alpha=255.0)
    if (gh, gw) == geometry.native:
        return q8
    return cv2.resize(q8, (geometry.native[1], geometry.native[0]), interpolation=cv2.INTER_LINEAR)
