"""Model builders: one parametrised U-Net, the article's simple no-skip network, and U-Nets on pretrained
keras.applications encoders (encoders.py). Importing this package does not import Keras (the CLI reads the
encoder table without it); the builders do."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .encoders import build_encoder_unet

if TYPE_CHECKING:
    import keras

    from ..config import TrainConfig


def build_model(cfg: TrainConfig, size: tuple[int | None, int | None] | None = None) -> keras.Model:
    """The model a config describes (shape checked by the config), for inputs of `size` (default: the frame;
    (None, None): any multiple of `cfg.multiple`, as a crop-trained model must take crops and whole frames)."""
    shape = (*(size or cfg.size), 3)
    if cfg.encoder:
        return build_encoder_unet(shape, cfg.encoder, weights=cfg.encoder_weights, filters=cfg.filters,
                                  batchnorm=cfg.batchnorm, freeze=cfg.freeze_encoder > 0)
    if cfg.arch == "simple":
        from .simple import build_simple
        return build_simple(shape, filters=cfg.filters)
    from .unet import build_unet
    return build_unet(shape, depth=cfg.depth, filters=cfg.filters, pooling=cfg.pooling,
                      dropout=cfg.dropout, dropout_blocks=cfg.dropout_blocks, batchnorm=cfg.batchnorm)
