"""Test-time augmentation as invertible (apply, undo) pairs over batches (B, H, W, C)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import UserError

Transform = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _hflip(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1]


TRANSFORMS: dict[str, Transform] = {
    "identity": (_identity, _identity),
    "hflip": (_hflip, _hflip),
}
TTAS: dict[str, list[str]] = {"none": ["identity"], "hflip": ["identity", "hflip"]}


def transforms_for(name: str) -> list[Transform]:
    """The (apply, undo) pairs of a TTA: 'none' or 'hflip' (identity + horizontal flip)."""
    if name not in TTAS:
        raise UserError(f"unknown TTA {name!r}: choose one of {', '.join(TTAS)}")
    return [TRANSFORMS[t] for t in TTAS[name]]


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, transforms: list[Transform]) -> np.ndarray:
    """Mean over transforms of undo(predict(apply(batch)))."""
    total = None
    for apply, undo in transforms:
        p = undo(np.asarray(predict(np.ascontiguousarray(apply(batch))), dtype=np.float32))
        total = p if total is None else total + p
    return total / len(transforms)
