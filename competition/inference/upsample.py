"""Upsampling to native 1918x1280: a model-resolution probability -> an 8-bit native map -> a 0/1 mask.

Plain (`to_native_u8`: quantise, resize bilinearly) or edge-aware: a guided filter snaps a low-resolution
probability map to the photo's own edges (`refined_native_u8`), after the refiner net where the run has one.

A 160x240 model's probability, blown up 8x to 1918x1280, has soft, blocky borders that ignore where the
car's outline really runs. The guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010) fits,
in every small window, the probability as a linear function of the photo's colours; averaged over the
windows, that carries the photo's edges into the probability. It runs on a 1/4-size decode of the JPEG
(twice the model's resolution for a 160x240 model), and the result is resized to native like any other
probability map. Measured on real photos (CHANGELOG.md, "Refinement"): +0.002 native dice for `cpu`,
whose outline is a model pixel or two off; but a perfect 160x240 mask loses 0.003 through it (where the
outline has no colour edge it smooths, inside the car it picks up reflections), so score a much better net
both ways (`--refine none|guided`) before keeping it. The filter runs in float32 in scratch planes kept per
thread (about 52 MB a thread at a 640x960 guide); its masks are those of the former float64 one to a few pixels
a photo (CHANGELOG.md, "The guided filter in float32").

`refine="guided"` in a run's config turns it on for `predict`, `score`, `cv` and blends; "none" (the
default, and every run made before it existed) resizes the probability alone; "net" first corrects the
probability with a second-stage net (models/refiner.py, trained by refiner.py).
"""
from __future__ import annotations

import threading
from typing import Callable

import cv2
import numpy as np

from ..base import rle
from ..base.geometry import Geometry
from ..base.images import reduction_for

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


def _box(x: np.ndarray, r: int, out: np.ndarray | None = None) -> np.ndarray:
    """The mean over each (2r+1)^2 window (reflected borders), as float32 (into `out` when given); integer input
    is summed exactly."""
    return cv2.boxFilter(x, cv2.CV_32F, (2 * r + 1, 2 * r + 1), dst=out, borderType=cv2.BORDER_REFLECT)


def _plus_product(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x += a * b in place, in one pass (float32)."""
    return cv2.accumulateProduct(a, b, x)


_SCRATCH = threading.local()  # each thread's working planes, kept from one guided_filter call to the next


def _scratch(shape: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """This thread's 20 float32 planes, 3 uint8 planes and a uint16 plane of `shape`, the same memory call after
    call: fresh arrays would cost more in page faults (the first touch of each new page) than the filter's
    arithmetic. About 52 MB a thread at 640x960, 13 MB at 320x480."""
    kept = getattr(_SCRATCH, "planes", None)
    if kept is None or kept[2].shape != shape:
        kept = _SCRATCH.planes = (list(np.empty((20, *shape), np.float32)), list(np.empty((3, *shape), np.uint8)),
                                  np.empty(shape, np.uint16))
    return kept


def guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float = EPS) -> np.ndarray:
    """He et al.'s colour guided filter: `p` (H, W) filtered with the edges of `guide` (H, W, 3: floats 0..1, or
    uint8 0..255, read as /255); a new float32 (H, W) array.

    One colour plane at a time, in float32, in this thread's scratch planes (`_scratch`): 13 box filters
    (cv2.boxFilter) take the window means of the colours, the probability and their products (those of a uint8
    guide as exact integer sums); each `x - a * b` is one fused pass (with -a kept where it is needed); the 3x3
    system of each window (colour covariance + eps) is solved by an LDL^T factorisation, whose pivots stay >= eps
    where a closed-form inverse cancels in float32; 4 more box filters average the fitted lines.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (got {eps}): it keeps every window's 3x3 system solvable")
    if guide.shape != (*p.shape, 3):
        raise ValueError(f"guide is {guide.shape}, expected {(*p.shape, 3)}: the probability's size, 3 colours")
    guide = np.ascontiguousarray(guide)  # a flipped or cropped view: once copied, as OpenCV wants it
    floats, bytes_, product = _scratch(p.shape)
    colours, tmp, mean, minus_mean, mean_p = floats[0:3], floats[3], floats[4:7], floats[7:10], floats[10]
    cov_p, (a, b, c, d, e, f) = floats[11:14], floats[14:20]
    if guide.dtype == np.uint8:  # 0..255 units: the covariance is 255^2 times larger, so is eps; q is the same
        planes = cv2.split(guide, bytes_)
        for colour, plane in zip(colours, planes):
            np.copyto(colour, plane)
        products = lambda x, y: np.multiply(x, y, out=product, dtype=np.uint16)  # exact: at most 255^2
        eps = eps * 255.0 ** 2
    else:
        planes = cv2.split(guide.astype(np.float32, copy=False), colours)
        products = lambda x, y: np.multiply(x, y, out=tmp)
    p = np.ascontiguousarray(p, dtype=np.float32)
    for k in range(3):
        np.negative(_box(planes[k], r, mean[k]), out=minus_mean[k])
    _box(p, r, mean_p)
    # the colours' covariance with p, and with each other (eps on the diagonal), in each window
    for k in range(3):
        _plus_product(_box(np.multiply(colours[k], p, out=tmp), r, cov_p[k]), minus_mean[k], mean_p)
    for (i, j), v in zip(((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)), (a, b, c, d, e, f)):
        _plus_product(_box(products(planes[i], planes[j]), r, v), minus_mean[i], mean[j])
    for v in (a, d, f):
        v += np.float32(eps)
    # Solve [[a b c] [b d e] [c e f]] slope = cov_p by LDL^T (pivots a, d1, f2, each >= eps), with l = -L's entries
    # (in the planes of the means, which are spent).
    minus_inv_a = np.divide(-1.0, a, out=tmp)
    l10, l20 = np.multiply(b, minus_inv_a, out=mean[0]), np.multiply(c, minus_inv_a, out=mean[1])
    d1 = _plus_product(d, l10, b)  # d - b^2 / a
    e1 = _plus_product(e, l20, b)
    f1 = _plus_product(f, l20, c)
    l21 = np.negative(np.divide(e1, d1, out=b), out=b)
    f2 = _plus_product(f1, l21, e1)
    y0, y1, y2 = cov_p  # forward: L y = cov_p; back: D L^T slope = y (in place)
    _plus_product(y1, l10, y0)
    _plus_product(_plus_product(y2, l20, y0), l21, y1)
    s2 = np.divide(y2, f2, out=y2)
    s1 = _plus_product(np.divide(y1, d1, out=y1), l21, s2)
    s0 = _plus_product(_plus_product(np.divide(y0, a, out=y0), l10, s1), l20, s2)
    offset = mean_p  # mean_p - slope . mean
    for s, m in zip((s0, s1, s2), minus_mean):
        _plus_product(offset, s, m)
    q = _box(offset, r)
    for s, colour in zip((s0, s1, s2), colours):
        _plus_product(q, _box(s, r, tmp), colour)
    return q


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
    q = guided_filter(guide, p, radius_for(geometry, (gh, gw)))
    q8 = cv2.convertScaleAbs(np.clip(q, 0.0, 1.0, out=q), alpha=255.0)
    if (gh, gw) == geometry.native:
        return q8
    return cv2.resize(q8, (geometry.native[1], geometry.native[0]), interpolation=cv2.INTER_LINEAR)
