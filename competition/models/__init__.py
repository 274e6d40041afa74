"""Model builders: one parametrised U-Net and the article's simple no-skip network."""
from __future__ import annotations

import keras

from ..config import TrainConfig
from .simple import build_simple
from .unet import build_unet


def build_model(cfg: TrainConfig) -> keras.Model:
    """The model a config describes (shape checked by the config)."""
    if cfg.arch == "simple":
        return build_simple((cfg.height, cfg.width, 3), filters=cfg.filters)
    return build_unet((cfg.height, cfg.width, 3), depth=cfg.depth, filters=cfg.filters, pooling=cfg.pooling,
                      dropout=cfg.dropout, dropout_blocks=cfg.dropout_blocks, batchnorm=cfg.batchnorm)


__all__ = ["build_model", "build_unet", "build_simple"]
