"""Run configuration as data: frozen dataclasses, named presets, JSON beside every run's outputs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .base.errors import UserError
from .base.fileio import read_json, write_json
from .models.encoders import encoder_spec

ARCHS = ("unet", "simple")
LOSSES = ("dice", "dice_global", "bce", "dice_bce")
POOLINGS = ("max", "strided")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("flip", "rotate", "contrast")
REFINES = ("none", "guided", "net")  # post-processing of the upsampled probability (inference/upsample.py, models/refiner.py)
REFINER_FROM = ("held-out", "training")  # what the refiner net learns from (training/refiner.py, --refiner-from)
REFINER_STEPS = 1000  # its training batches; 2000 gained +0.0004 native dice over 200 on real photos (docs/results.md)
CONFIG_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as config.json in each fold's folder. Each field's help is
    its `train --flag`'s help (competition/cli/train_flags.py)."""

    preset: str = "unet"
    # model
    arch: str = field(default="unet", metadata={"help": "unet: the parametrised U-Net; simple: the article's "
                                                        "no-skip net"})
    depth: int = field(default=4, metadata={"help": "number of 2x downsamplings"})
    filters: int = field(default=64, metadata={"help": "filters of the first block, doubled per level"})
    pooling: str = field(default="max", metadata={"help": "max: max-pool; strided: stride-2 convolution"})
    dropout: float = field(default=0.3, metadata={"help": "dropout rate"})
    dropout_blocks: int = field(default=2, metadata={"help": "dropout in this many deepest blocks (the article: 2)"})
    batchnorm: bool = field(default=False, metadata={"help": "batch normalisation after each convolution"})
    encoder: str = field(default="", metadata={"help": "a pretrained keras.applications backbone under the U-Net "
                                                       "decoder; empty: the from-scratch U-Net"})
    encoder_weights: str = field(default="", metadata={"help": "with an encoder: imagenet (needs internet or the "
                                                               "file in ~/.keras/models/) | none | a weights file"})
    freeze_encoder: int = field(default=0, metadata={"help": "train the decoder alone this many epochs, then "
                                                             "everything at a lower learning rate"})
    height: int = field(default=96, metadata={"help": "input height (the CLI's --size HEIGHTxWIDTH)"})
    width: int = field(default=128, metadata={"help": "input width (the CLI's --size HEIGHTxWIDTH)"})
    fit: str = field(default="resize", metadata={"help": "resize: stretch to the input size; pad: keep the "
                                                         "aspect, pad"})
    crop: tuple[int, int] | None = field(default=None, metadata={"help": "train on random crops (height, width) of "
                                                                         "the frame; None: whole frames"})
    image_interp: str = field(default="area", metadata={"help": "how photos are shrunk: area | bilinear | nearest "
                                                                "(the article)"})
    # loss and optimiser
    loss: str = field(default="dice", metadata={"help": "dice | dice_global | bce | dice_bce"})
    bce_weight: float = field(default=0.5, metadata={"help": "w in dice_bce = (1 - w) * dice loss + w * BCE"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate"})
    epsilon: float = field(default=1e-6, metadata={"help": "Adam's epsilon"})
    batch: int = field(default=32, metadata={"help": "batch size per replica"})
    epochs: int = field(default=20, metadata={"help": "most epochs to train"})
    patience: int = field(default=2, metadata={"help": "early stopping: epochs without progress on the monitored "
                                                       "value"})
    monitor: str = field(default="val_loss", metadata={"help": "the value early stopping and the best model "
                                                               "follow: val_loss | val_dice"})
    reduce_lr_patience: int = field(default=0, metadata={"help": "ReduceLROnPlateau's patience (0: off)"})
    schedule: str = field(default="constant", metadata={"help": "learning-rate schedule after warm-up: constant "
                                                                "(with ReduceLROnPlateau if set) | cosine (decay to "
                                                                "lr/100 by the end)"})
    warmup: int = field(default=0, metadata={"help": "epochs of linear learning-rate warm-up from lr/10 (0: none)"})
    clipnorm: float = field(default=0.0, metadata={"help": "clip each step's gradient to this global norm (0: off)"})
    augment: tuple[str, ...] = field(default=AUGMENTS, metadata={"help": "training augmentations: flip, rotate, "
                                                                         "contrast"})
    rotate: float = field(default=0.01, metadata={"help": "rotation augmentation, a fraction of a full turn (the "
                                                          "article's RandomRotation(0.01))"})
    contrast: float = field(default=0.2, metadata={"help": "contrast augmentation factor"})
    # data
    k: int = field(default=5, metadata={"help": "number of folds, grouped by car"})
    fold_seed: int = field(default=42, metadata={"help": "seed of the assignment of cars to folds"})
    max_images: int = field(default=0, metadata={"help": "train on at most this many images (0: all; the article "
                                                         "trained on 1,000)"})
    seed: int = field(default=42, metadata={"help": "random seed of training"})
    mixed_precision: bool = field(default=False, metadata={"help": "half-precision compute where the device does it "
                                                                   "well: float16 on T4/P100/V100, bfloat16 on Ampere+ "
                                                                   "and on CPUs with AVX512-BF16/AMX, else float32 "
                                                                   "(runtime.precision_policy); --no-mixed-precision: "
                                                                   "float32"})
    threshold: float = field(default=0.5, metadata={"help": "probability threshold of a mask pixel (score "
                                                            "--tune-threshold saves the best)"})
    refine: str = field(default="none", metadata={"help": "how probabilities reach 1918x1280: guided snaps them to "
                                                          "the photo's edges (inference/upsample.py), net corrects them first "
                                                          "with the refiner net (models/refiner.py), none resizes them"})
    refiner_from: str = field(default="held-out", metadata={"help": "what the refiner net learns from by default: "
                                                                    "held-out (other folds' predictions) | training "
                                                                    "(the fold's own training photos)"})
    refiner_steps: int = field(default=REFINER_STEPS, metadata={"help": "the refiner net's training batches"})
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", RENAMED.get(self.preset, self.preset))  # a renamed preset -> its new name
        object.__setattr__(self, "crop", tuple(self.crop) if self.crop else None)  # () or [] (JSON): no crop

        if self.encoder and not self.encoder_weights:
            object.__setattr__(self, "encoder_weights", "imagenet")
        check_config(self)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def train_size(self) -> tuple[int, int]:
        """The input size of a training batch: the crop, or the whole frame."""
        return self.crop or self.size

    @property
    def eval_batch(self) -> int:
        """Batch for whole frames (validation, scoring, prediction): the training batch, scaled down by
        the frame-to-crop area ratio when training on crops, so a batch of frames fits where crops did."""
        if not self.crop:
            return self.batch
        return max(1, self.batch * self.crop[0] * self.crop[1] // (self.height * self.width))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        if self.encoder:
            return 32  # every backbone's bottleneck has stride 32
        return 2 ** (3 if self.arch == "simple" else self.depth)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        d["crop"] = list(self.crop) if self.crop else None
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"{where}: unknown settings {sorted(unknown)} (written by another version?)")
        d = dict(d)
        if "augment" in d:
            d["augment"] = tuple(d["augment"])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def check_threshold(threshold: float) -> float:
    """The threshold itself, or a one-line UserError unless 0 < threshold < 1."""
    if not 0 < threshold < 1:
        raise UserError(f"threshold {threshold} must be strictly between 0 and 1")
    return threshold


def check_refine(refine: str) -> str:
    """The refinement itself, or a one-line UserError unless it is one of REFINES."""
    if refine not in REFINES:
        raise UserError(f"unknown refinement {refine!r}: choose one of {', '.join(REFINES)}")
    return refine


def refine_words(refine: str) -> str:
    """What the refinement adds to a line describing a prediction: "" or ", guided refinement"."""
    return "" if refine == "none" else f", {refine} refinement"


def check_config(c: TrainConfig) -> None:
    """One-line UserErrors for impossible settings."""
    def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise UserError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    choice("model", c.arch, ARCHS)
    choice("loss", c.loss, LOSSES)
    choice("pooling", c.pooling, POOLINGS)
    choice("fit", c.fit, ("resize", "pad"))
    choice("learning-rate schedule", c.schedule, SCHEDULES)
    if c.warmup < 0 or c.clipnorm < 0:
        raise UserError(f"warm-up epochs and clipnorm must not be negative (got {c.warmup}, {c.clipnorm})")
    choice("image interpolation", c.image_interp, ("area", "bilinear", "nearest"))
    for a in c.augment:
        choice("augmentation", a, AUGMENTS)
    if c.depth < 1 or c.filters < 1:
        raise UserError(f"depth and filters must be positive (got depth {c.depth}, filters {c.filters})")
    check_encoder(c)
    m = c.multiple
    if c.height <= 0 or c.width <= 0:
        raise UserError(f"input size {c.height}x{c.width}: height and width must be positive, e.g. 640x960")
    if c.crop is not None and (c.crop[0] <= 0 or c.crop[1] <= 0):
        raise UserError(f"crop {c.crop[0]}x{c.crop[1]}: height and width must be positive, e.g. 640x640 (or 'none' "
                        f"for whole frames)")
    if c.height % m or c.width % m:
        model = f"encoder {c.encoder}" if c.encoder else f"model {c.arch} depth {c.depth}"
        raise UserError(f"input size {c.height}x{c.width} is not a multiple of {m} (2^{m.bit_length() - 1}, "
                        f"{model}): try {max(m, round(c.height / m) * m)}x"
                        f"{max(m, round(c.width / m) * m)}")
    if c.crop is not None:
        ch, cw = c.crop
        if ch % m or cw % m:
            raise UserError(f"crop {ch}x{cw} is not a multiple of {m} (model {c.arch} depth {c.depth}): try "
                            f"{max(m, round(ch / m) * m)}x{max(m, round(cw / m) * m)}")
        if ch > c.height or cw > c.width:
            raise UserError(f"crop {ch}x{cw} is larger than the frame {c.height}x{c.width} it is cut from: "
                            f"pass a smaller --crop or a larger --size")
    check_threshold(c.threshold)
    check_refine(c.refine)
    choice("refiner source", c.refiner_from, REFINER_FROM)
    if c.refiner_steps < 1:
        raise UserError(f"refiner steps must be at least 1 (got {c.refiner_steps})")
    if not 0 <= c.bce_weight <= 1:
        raise UserError(f"bce weight {c.bce_weight} must be within [0, 1]")
    if c.batch < 1 or c.epochs < 1:
        raise UserError(f"batch and epochs must be at least 1 (got batch {c.batch}, epochs {c.epochs})")
    if c.k < 2:
        raise UserError(f"k={c.k} folds: need at least 2")


def check_encoder(c: TrainConfig) -> None:
    """One-line UserErrors for encoder settings that cannot work together."""
    if c.encoder:
        encoder_spec(c.encoder)
        if c.arch != "unet":
            raise UserError(f"--encoder {c.encoder} builds a U-Net: it does not go with --model {c.arch}")
    elif c.encoder_weights or c.freeze_encoder:
        raise UserError("--encoder-weights and --freeze-encoder need --encoder NAME")
    if c.freeze_encoder < 0:
        raise UserError(f"--freeze-encoder {c.freeze_encoder}: must be 0 or more epochs")


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
    # minutes (docs/results.md, "make demo in 5 minutes"): 0.9715 held-out (every car >= 0.968) on the synthetic
    # set with varied paints, where 96x144 for 16 epochs gave 0.957 and 160x240 for 30 took 17 minutes.
    "demo": dict(arch="unet", depth=4, filters=16, pooling="max", dropout=0.0, dropout_blocks=0, batchnorm=True,
                 height=128, width=192, fit="resize", image_interp="area", loss="dice_bce", bce_weight=0.5,
                 lr=1e-3, schedule="cosine", warmup=1, clipnorm=1.0, epsilon=1e-7, batch=8, epochs=12,
                 patience=12, monitor="val_dice", k=4, max_images=0, refine="guided"),
    # Real photos on a 2-core CPU in about 20 minutes a fold (docs/results.md, "real-cpu at 192x288"; formerly
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

# The presets `train --help` and the README offer, each with one line: purpose, hardware, time a fold, score
# (measured or estimate: docs/results.md, docs/performance.md).
OFFERED: dict[str, str] = {
    "demo": "the synthetic cars, to try the toolkit: any CPU, ~20 min (measured), 0.91 dice on synthetic "
            "cars (measured)",
    "cpu": "real photos on a laptop: 2 CPU cores, ~20 min a fold with bfloat16, twice that without (measured), "
           "0.991 (measured)",
    "unet": "the default, 640x960: Kaggle's 2x T4 in float16, ~1.5-3 h a fold (estimate), ~0.996 (estimate)",
    "full": "full resolution 1280x1920 (1024 crops): Kaggle's 2x T4 in float16, ~2-4 h a fold (estimate), "
            "~0.997 (estimate)",
}
# The seed article's three U-Nets, reproduced exactly (docs/guide.md, "Reproducing the article"): not offered.
REPRODUCTIONS = ("article-simple", "article-unet", "article-unet-strided")

# Renamed presets: the same values under a new name. A run's config.json that names one loads as its new name.
RENAMED: dict[str, str] = {
    "seed-simple": "article-simple",
    "seed-unet": "article-unet",
    "unet-strided": "article-unet-strided",
    "real-cpu": "cpu",
    "unet-t4": "full",
}
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


def save_config(path: Path, cfg: TrainConfig) -> None:
    write_json(path, cfg.to_json())


def load_config(path: Path) -> TrainConfig:
    if not path.is_file():
        raise UserError(f"{path}: no config.json; is this a run folder made by `competition train`?")
    return TrainConfig.from_json(read_json(path), str(path))


def parse_size(text: str) -> tuple[int, int]:
    """'640x960' -> (640, 960): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError as e:
        raise UserError(f"size {text!r}: expected HEIGHTxWIDTH, e.g. 640x960") from e


def parse_crop(text: str) -> tuple[int, int] | tuple[()]:
    """'640x640' -> (640, 640); 'none' -> () (whole frames: clears a preset's crop, where None means unset)."""
    if text.strip().lower() in ("none", "0", ""):
        return ()
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError as e:
        raise UserError(f"crop {text!r}: expected HEIGHTxWIDTH, e.g. 640x640, or none") from e


