"""The one place that maps between native 1918x1280 and a model's input size, both ways.

`fit="resize"` stretches the photo to the model size (the article's 96x128 does this);
`fit="pad"` keeps the aspect ratio and pads (1918 -> 1920 at full resolution). Training, scoring
and inference all call `to_model` / `from_model`, so padding is undone in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import NATIVE_SHAPE

INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class Geometry:
    """Model input size and how native images are fitted into it."""

    height: int
    width: int
    fit: str = "resize"  # "resize" | "pad"
    native: tuple[int, int] = NATIVE_SHAPE

    def __post_init__(self) -> None:
        if self.fit not in ("resize", "pad"):
            raise ValueError(f"fit must be 'resize' or 'pad', got {self.fit!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"model size must be positive, got {self.height}x{self.width}")

    @property
    def inner(self) -> tuple[int, int]:
        """Size of the photo inside the model input, before padding."""
        if self.fit == "resize":
            return self.height, self.width
        scale = min(self.height / self.native[0], self.width / self.native[1])
        return (min(self.height, round(self.native[0] * scale)),
                min(self.width, round(self.native[1] * scale)))

    @property
    def offset(self) -> tuple[int, int]:
        """Top and left padding."""
        ih, iw = self.inner
        return (self.height - ih) // 2, (self.width - iw) // 2

    def to_model(self, image: np.ndarray, interpolation: str = "area") -> np.ndarray:
        """Fit a native (or JPEG-reduced native) image or mask into the model's input size."""
        self._check_native_like(image)
        ih, iw = self.inner
        out = image
        if image.shape[:2] != (ih, iw):
            out = cv2.resize(image, (iw, ih), interpolation=INTERPOLATIONS[interpolation])
            if image.ndim == 3 and out.ndim == 2:
                out = out[..., None]
        if (ih, iw) != (self.height, self.width):
            top, left = self.offset
            border = cv2.BORDER_REFLECT_101 if interpolation != "nearest" else cv2.BORDER_CONSTANT
            out = cv2.copyMakeBorder(out, top, self.height - ih - top, left, self.width - iw - left, border, value=0)
            if image.ndim == 3 and out.ndim == 2:
                out = out[..., None]
        return out

    def from_model(self, prob: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Undo `to_model` on a probability map (float or uint8): crop the padding, resize bilinearly to native
        (or to `size`, height x width: a reduced decode of the photo, for `refine`)."""
        if prob.shape[:2] != (self.height, self.width):
            raise ValueError(f"prediction is {prob.shape[1]}x{prob.shape[0]}, model size is {self.width}x{self.height}")
        top, left = self.offset
        ih, iw = self.inner
        crop = prob[top:top + ih, left:left + iw]
        crop = np.ascontiguousarray(crop[..., 0] if crop.ndim == 3 else crop)
        h, w = size or self.native
        if (ih, iw) == (h, w):
            return crop
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)

    def _check_native_like(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        for r in (1, 2, 4, 8):
            if (h, w) == (-(-self.native[0] // r), -(-self.native[1] // r)):
                return
        raise ValueError(f"image is {w}x{h}; expected the native {self.native[1]}x{self.native[0]} "
                         f"(or a JPEG-reduced 1/2, 1/4, 1/8 of it)")
