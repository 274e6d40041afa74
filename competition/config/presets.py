"""The named presets: each a set of TrainConfig values, the ones help and the README offer, and the names retired."""
from __future__ import annotations

from ..base.errors import UserError
from .figures import FIGURES, offered_line
from .settings import AUGMENTS, RENAMED, TrainConfig

_SEED = dict(height=96, width=128, fit="resize", image_interp="nearest", loss="dice_global", lr=1e-4,
             epsilon=1e-6, batch=32, epochs=20, patience=2, monitor="val_loss", max_images=1000,
             augment=AUGMENTS, batchnorm=False)

PRESETS: dict[str, dict] = {
    # The article's two models and hyper-parameters, exactly (docs/guide.md, "Reproducing the article").
    "article-simple": dict(_SEED, arch="simple", filters=64, depth=3, dropout=0.0, dropout_blocks=0),
    "article-unet": dict(_SEED, arch="unet", depth=4, filters=64, pooling="max", dropout=0.3, dropout_blocks=2),
    # The article's proposed change: strided convolutions instead of max-pooling.
    "article-unet-strided": dict(_SEED, arch="unet", depth=4, filters=64, pooling="strided", dropout=0.3,
                                 dropout_blocks=2),
    # The default, for Kaggle's 2x T4: larger input, batch norm, dice+BCE, LR schedule, every image; float16 on the
    # T4s (runtime.precision_policy: float32 on a GPU without fast float16 or bfloat16).
    "unet": dict(arch="unet", depth=5, filters=32, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                 height=640, width=960, fit="resize", image_interp="area", loss="dice_bce", bce_weight=0.5,
                 lr=1e-3, epsilon=1e-7, batch=8, epochs=40, patience=6, monitor="val_dice",
                 reduce_lr_patience=3, max_images=0, mixed_precision=True),
    # Full resolution, whole frames (1918 padded to 1920): batch 2, for a GPU with room for it (not offered: `full`
    # is full resolution within a T4).
    "unet-1280": dict(arch="unet", depth=6, filters=16, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                      height=1280, width=1920, fit="pad", image_interp="area", loss="dice_bce", lr=1e-3,
                      epsilon=1e-7, batch=2, epochs=40, patience=6, monitor="val_dice", reduce_lr_patience=3,
                      mixed_precision=True),
    # Full resolution within one 16 GB T4 (Kaggle's GPU): unet-1280's net trained on random 1024x1024 crops, batch 8
    # per GPU in float16 (~9.5 GB by `plan`'s estimate); validated, scored and predicted on whole padded frames.
    "full": dict(arch="unet", depth=6, filters=16, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                 height=1280, width=1920, fit="pad", crop=(1024, 1024), image_interp="area", loss="dice_bce",
                 lr=1e-3, epsilon=1e-7, batch=8, epochs=40, patience=6, monitor="val_dice", reduce_lr_patience=3,
                 mixed_precision=True),
    # The demo: a small U-Net that learns the synthetic cars on 2 CPU cores. Warm-up, cosine decay and clipped
    # gradients from 1e-3: at the former constant 3e-3 its validation dice collapsed for whole epochs on real
    # photos (to 0.64-0.73 in 3 of 4 folds; docs/results.md) and swung 0.75-0.89 on the synthetic set. Refined
    # as cpu is. 128x192 for 12 epochs (issue 36): chosen from a measured curve of held-out dice against
    # minutes (CHANGELOG.md, "make demo in 5 minutes"): 0.9715 held-out (every car >= 0.968) on the synthetic
    # set with varied paints, where 96x144 for 16 epochs gave 0.957 and 160x240 for 30 took 17 minutes.
    "demo": dict(arch="unet", depth=4, filters=16, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                 height=128, width=192, fit="resize", image_interp="area", loss="dice_bce", bce_weight=0.5,
                 lr=1e-3, schedule="cosine", warmup=1, clipnorm=1.0, epsilon=1e-7, batch=8, epochs=12,
                 patience=12, monitor="val_dice", k=4, max_images=0, refine="guided"),
    # Real photos on a 2-core CPU in about 20 minutes a fold (CHANGELOG.md, "real-cpu at 192x288"; formerly
    # named real-cpu): the demo's net and schedule at 192x288 (1.44x the pixels of 160x240 for 1.2x the epoch), 5
    # folds by car, no rotation (the studio's cameras are level). Batch 4: twice the updates of batch 8 for about
    # 1.25x the time an epoch. Mixed precision: bfloat16 on a CPU with AVX512-BF16/AMX halves the epoch
    # (runtime.precision_policy) and buys 20 epochs; float32 elsewhere, where they take about twice as long. Then
    # `train` trains a 3,000-step refiner net from the fold's own training photos (refiner.py; in bfloat16 too:
    # 2,000 steps in the time 1,000 took in float32; on the same first stage fold 0 scored 0.9908 with 2,000
    # steps and 0.9915 with 3,000, for about a minute more: docs/results.md), then the guided filter.
    "cpu": dict(arch="unet", depth=4, filters=16, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                height=192, width=288, fit="resize", image_interp="area", loss="dice_bce", bce_weight=0.5,
                lr=1e-3, schedule="cosine", warmup=1, clipnorm=1.0, epsilon=1e-7, batch=4, epochs=20,
                patience=20, monitor="val_dice", augment=("flip", "contrast"), k=5, max_images=0,
                mixed_precision=True, refine="net", refiner_from="training", refiner_steps=3000),
    # Unit tests: tiny and fast (hidden from help).
    "tiny": dict(arch="unet", depth=2, filters=4, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                 height=32, width=48, fit="resize", loss="dice_bce", lr=1e-2, epsilon=1e-7, batch=4, epochs=2,
                 patience=2, monitor="val_dice", k=2, max_images=0),
}

# The presets `train --help` and the README offer, each with one line made from its figures (figures.py).
OFFERED: dict[str, str] = {name: offered_line(name) for name in FIGURES}
# The seed article's three U-Nets, reproduced exactly (docs/guide.md, "Reproducing the article"): not offered.
REPRODUCTIONS = ("article-simple", "article-unet", "article-unet-strided")

# Retired presets and their successors: given to train (or anything that builds a preset), one line naming the
# successor; a run made with one still loads from its config.json (every value is there), under its own name.
RETIRED: dict[str, str] = {**RENAMED, "real-cpu-30": "cpu"}


def offered_help() -> str:
    """The preset choices as help shows them: the offered ones, then the article's reproduction."""
    return f"{' | '.join(OFFERED)} (docs/guide.md, Presets; the article's: {', '.join(REPRODUCTIONS)})"


def preset(name: str, **overrides) -> TrainConfig:
    """The named preset with overrides (None values are ignored); a retired or unknown name is a one-line error."""
    if name in RETIRED:
        raise UserError(f"preset {name!r} is retired: use --preset {RETIRED[name]}, its successor (a run made with "
                        f"{name!r} still loads from its config.json)")
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(OFFERED)} (or the article's "
                        f"{', '.join(REPRODUCTIONS)})")
    values = dict(PRESETS[name], preset=name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "augment" in values:
        values["augment"] = tuple(values["augment"])
    return TrainConfig(**values)

