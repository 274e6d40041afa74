"""Dice, BCE and dice+BCE losses and the per-image dice metric: pure keras.ops math in float32.

The math is plain functions; the loss and metric classes are thin, registered wrappers, so
`keras.models.load_model` needs no `custom_objects`.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "carvana"


def _f32(y_true, y_pred):
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def soft_dice_per_image(y_true, y_pred, smooth: float = 1.0):
    """Soft dice of each image in the batch, shape (batch,)."""
    y_true, y_pred = _f32(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * inter + smooth) / (total + smooth)


def soft_dice_global(y_true, y_pred, smooth: float = 1e-5):
    """The article's dice: all pixels of the batch flattened together (smooth 10e-6)."""
    y_true, y_pred = _f32(y_true, y_pred)
    inter = ops.sum(y_true * y_pred)
    return (2.0 * inter + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


def bce_per_image(y_true, y_pred):
    """Mean binary cross-entropy of each image, shape (batch,)."""
    y_true, y_pred = _f32(y_true, y_pred)
    eps = 1e-7
    p = ops.clip(y_pred, eps, 1 - eps)
    bce = -(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
    return ops.mean(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=1)


def hard_dice_per_image(y_true, y_pred, threshold: float = 0.5):
    """Kaggle's dice of each image after thresholding (both empty -> 1), shape (batch,)."""
    y_true, y_pred = _f32(y_true, y_pred)
    t = ops.cast(y_true > 0.5, "float32")
    p = ops.cast(y_pred > threshold, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(t * p, axis=axes)
    total = ops.sum(t, axis=axes) + ops.sum(p, axis=axes)
    return ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1.0), 1.0)


@keras.saving.register_keras_serializable(PACKAGE)
class SegmentationLoss(keras.losses.Loss):
    """dice | dice_global | bce | dice_bce (= (1 - w) * dice loss + w * BCE), one serialisable class."""

    def __init__(self, kind: str = "dice", bce_weight: float = 0.5, name: str | None = None, **kwargs):
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.bce_weight = kind, float(bce_weight)

    def call(self, y_true, y_pred):
        if self.kind == "dice_global":
            loss = 1.0 - soft_dice_global(y_true, y_pred)
            return ops.broadcast_to(loss, (ops.shape(y_pred)[0],))
        dice = 1.0 - soft_dice_per_image(y_true, y_pred)
        if self.kind == "dice":
            return dice
        bce = bce_per_image(y_true, y_pred)
        if self.kind == "bce":
            return bce
        return (1.0 - self.bce_weight) * dice + self.bce_weight * bce

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "bce_weight": self.bce_weight}


@keras.saving.register_keras_serializable(PACKAGE)
class DiceMetric(keras.metrics.Mean):
    """Mean per-image dice at a threshold (Kaggle's metric at model resolution); name 'dice'."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(hard_dice_per_image(y_true, y_pred, self.threshold), sample_weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(PACKAGE)
class GlobalDiceMetric(keras.metrics.Mean):
    """The article's batch-global soft dice, averaged over batches; name 'dice_coef'."""

    def __init__(self, name: str = "dice_coef", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(soft_dice_global(y_true, y_pred), sample_weight)


def make_loss(kind: str, bce_weight: float = 0.5) -> SegmentationLoss:
    return SegmentationLoss(kind, bce_weight)


def make_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    return [DiceMetric(threshold), GlobalDiceMetric()]
