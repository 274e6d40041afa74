"""Kaggle's metric and what scoring keeps of each image: dice of two masks, the dice at every threshold from one
8-bit native map, a fold's per-image results and its worst masks. Pure numpy."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Kaggle's dice of two 0/1 masks: 2|A and B| / (|A| + |B|); both empty -> 1."""
    t, p = true.astype(bool, copy=False), pred.astype(bool, copy=False)
    total = int(np.count_nonzero(t)) + int(np.count_nonzero(p))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(t & p)) / total


def threshold_curve(native_u8: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice at each of THRESHOLDS from one image's 8-bit native probabilities (histograms, one pass)."""
    all_hist = np.bincount(native_u8.ravel(), minlength=256)
    true_hist = np.bincount(native_u8[true.astype(bool)], minlength=256)
    # pixels predicted at threshold t: value > t * 255  ->  suffix sums from floor(t * 255) + 1
    pred_counts = np.cumsum(all_hist[::-1])[::-1]
    tp_counts = np.cumsum(true_hist[::-1])[::-1]
    cut = np.minimum(np.floor(THRESHOLDS * 255).astype(int) + 1, 255)
    n_true = int(true_hist.sum())
    denom = n_true + pred_counts[cut]
    return np.where(denom > 0, 2.0 * tp_counts[cut] / np.maximum(denom, 1), 1.0)


@dataclass
class FoldScore:
    """Per-image results of one fold, and the predicted masks of its worst images."""

    rows: list[dict] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    inter: float = 0.0
    sums: float = 0.0
    worst: list[tuple[float, int, str, np.ndarray]] = field(default_factory=list)  # heap: (-dice, n, id, packed)

    @property
    def dice(self) -> np.ndarray:
        return np.array([r["dice"] for r in self.rows])

    def global_dice(self) -> float:
        """The article's soft dice with all pixels of all images flattened together (model resolution)."""
        return (2 * self.inter + 1e-5) / (self.sums + 1e-5)

    def best_threshold(self) -> tuple[float, float]:
        mean = np.mean(self.curves, axis=0)
        i = int(np.argmax(mean))
        return float(THRESHOLDS[i]), float(mean[i])

    def keep_if_worst(self, image_id: str, d: float, pred: np.ndarray, n: int) -> None:
        """Keep `pred` (bit-packed) while it is among the n lowest dice seen so far."""
        if n <= 0:
            return
        item = (-d, -len(self.rows), image_id, np.packbits(pred.astype(bool)))
        (heapq.heappush if len(self.worst) < n else heapq.heappushpop)(self.worst, item)

    def worst_masks(self) -> list[tuple[str, np.ndarray]]:
        """(image id, packed predicted mask) of the kept worst images, worst first (ties: earlier first)."""
        return [(image_id, packed) for _, _, image_id, packed in sorted(self.worst, reverse=True)]


def pooled_threshold(summaries: list[dict]) -> tuple[float, float]:
    """The threshold whose mean dice over every image of the scored folds is highest (each fold's mean curve
    weighted by its images), and that dice: what a fold ensemble should use, rather than one fold's best."""
    mean = np.average([s["threshold_curve"]["dice_mean"] for s in summaries], axis=0,
                      weights=[s["images"] for s in summaries])
    i = int(np.argmax(mean))
    return float(THRESHOLDS[i]), float(mean[i])
