"""Model builders: one parametrised U-Net and the article's simple no-skip network."""
from __future__ import annotations

import keras

from ..config import TrainConfig
from .simple import build_simple
from .unet import build_unet


def build_model(cfg: TrainConfig, size: tuple[int | None, int | None] | None = None) -> keras.Model:
    """The model a config describes (shape checked by the config), for inputs of `size` (default: the frame;
    (None, None): any multiple of `cfg.multiple`, as a crop-trained model must take crops and whole frames)."""
    shape = (*(size or cfg.size), 3)
    if cfg.arch == "simple":
        return build_simple(shape, filters=cfg.filters)
    return build_unet(shape, depth=cfg.depth, filters=cfg.filters, pooling=cfg.pooling,
                      dropout=cfg.dropout, dropout_blocks=cfg.dropout_blocks, batchnorm=cfg.batchnorm)


__all__ = ["build_model", "build_unet", "build_simple"]
