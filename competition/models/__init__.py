"""Model builders: one parametrised U-Net, the article's simple no-skip network, and U-Nets on pretrained
keras.applications encoders (encoders.py). Importing this package does not import Keras (the CLI reads the
encoder table without it); the builders do."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import TrainConfig

if TYPE_CHECKING:
    import keras


def build_model(cfg: TrainConfig) -> keras.Model:
    """The model a config describes (shape checked by the config)."""
    if cfg.encoder:
        from .encoders import build_encoder_unet
        return build_encoder_unet((cfg.height, cfg.width, 3), cfg.encoder, weights=cfg.encoder_weights,
                                  filters=cfg.filters, batchnorm=cfg.batchnorm, freeze=cfg.freeze_encoder > 0)
    if cfg.arch == "simple":
        from .simple import build_simple
        return build_simple((cfg.height, cfg.width, 3), filters=cfg.filters)
    from .unet import build_unet
    return build_unet((cfg.height, cfg.width, 3), depth=cfg.depth, filters=cfg.filters, pooling=cfg.pooling,
                      dropout=cfg.dropout, dropout_blocks=cfg.dropout_blocks, batchnorm=cfg.batchnorm)


def __getattr__(name: str) -> Any:
    """build_unet, build_simple, build_encoder_unet, imported (with Keras) when first asked for."""
    modules = {"build_unet": ".unet", "build_simple": ".simple", "build_encoder_unet": ".encoders"}
    if name in modules:
        import importlib
        return getattr(importlib.import_module(modules[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_model", "build_unet", "build_simple", "build_encoder_unet"]
