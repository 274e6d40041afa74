"""A run's settings as data: `TrainConfig`, a frozen dataclass written as config.json beside every run's outputs
and read back checked (types, ranges, the keys every config.json has)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import UserError
from ..base.fileio import damaged, read_json, write_json
from ..models.encoders import encoder_spec

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
        check_types(self)
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
        """A config from its JSON object; what does not fit (not an object, a key every config.json has missing, an
        unknown key, a value of another type or out of range) is one UserError saying what."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: {type(d).__name__} where a config (a JSON object) was written")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"{where}: unknown settings {sorted(unknown)} (written by another version?)")
        missing = [k for k in ALWAYS_WRITTEN if k not in d]
        if missing:
            raise UserError(f"{where}: no {missing[0]!r} (every config.json the toolkit writes has it)")
        d = dict(d)
        if isinstance(d.get("augment"), list):
            d["augment"] = tuple(d["augment"])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# The keys of the first config.json the toolkit wrote (2026-11-25): every config.json has them; later keys take
# their defaults when a run made before them is read.
ALWAYS_WRITTEN = ("preset", "arch", "depth", "filters", "pooling", "dropout", "dropout_blocks", "batchnorm", "height",
                  "width", "fit", "image_interp", "loss", "bce_weight", "lr", "epsilon", "batch", "epochs", "patience",
                  "monitor", "reduce_lr_patience", "augment", "rotate", "contrast", "k", "fold_seed", "max_images",
                  "seed", "mixed_precision", "threshold", "version")
MAX_SIDE = 16_384  # the largest input side: 8x native
# Each number's range, checked where a config is made (a preset with flags, a config.json read back), before any
# work: (lowest, highest, the lowest itself excluded). Finite always: NaN fails every comparison, so it is refused
# by name. 2**32 - 1: the largest seed numpy and TensorFlow take.
RANGES: dict[str, tuple[float, float, bool]] = {
    "depth": (1, 8, False), "filters": (1, 1024, False), "dropout": (0, 0.99, False), "dropout_blocks": (0, 8, False),
    "freeze_encoder": (0, 10_000, False),
    "bce_weight": (0, 1, False), "lr": (0, 1, True), "epsilon": (0, 1, True), "batch": (1, 4096, False),
    "epochs": (1, 10_000, False), "patience": (0, 10_000, False), "reduce_lr_patience": (0, 10_000, False),
    "warmup": (0, 10_000, False), "clipnorm": (0, 1e6, False), "rotate": (0, 0.5, False), "contrast": (0, 1, False),
    "k": (2, 100, False), "fold_seed": (0, 2**32 - 1, False), "max_images": (0, 10_000_000, False),
    "seed": (0, 2**32 - 1, False), "threshold": (0, 1, True), "refiner_steps": (1, 10_000_000, False),
    "version": (1, CONFIG_VERSION, False),
}


def _setting(name: str) -> str:
    """How a user names a setting: its train flag (--size for height and width, --model for arch)."""
    return {"arch": "--model", "height": "--size height", "width": "--size width"}.get(
        name, "--" + name.replace("_", "-"))


def check_types(c: TrainConfig) -> None:
    """One line for a value of another type than its field's (a hand-edited config.json, say), before any check
    compares it; then each number against RANGES."""
    for f in dataclasses.fields(c):
        value, kind = getattr(c, f.name), str(f.type)
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind.startswith("tuple[int, int]"):
            ok = value is None or (isinstance(value, (tuple, list)) and (len(value) in (0, 2)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value))
        elif kind.startswith("tuple[str"):
            ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
        else:
            raise TypeError(f"TrainConfig.{f.name}: no check for type {kind}")
        if not ok:
            want = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string"}.get(
                kind, "HEIGHTxWIDTH" if kind.startswith("tuple[int") else "a list of names")
            raise UserError(f"{_setting(f.name)} {value!r}: must be {want}")
        if f.name in RANGES:
            check_range(_setting(f.name), value, *RANGES[f.name])


def check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    """`value` itself, or a one-line UserError unless it is finite and within [low, high] ((low, high] when
    low_open)."""
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        def shown(x: float) -> str:
            return f"{int(x)}" if x == int(x) else f"{x:g}"
        span = f"above {shown(low)} and at most {shown(high)}" if low_open else f"from {shown(low)} to {shown(high)}"
        raise UserError(f"{name} {value!r}: must be a number {span}")
    return value


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
    if not (0 < c.height <= MAX_SIDE and 0 < c.width <= MAX_SIDE):
        raise UserError(f"input size {c.height}x{c.width}: height and width must be positive (at most {MAX_SIDE}), "
                        f"e.g. 640x960")
    if c.crop is not None and not (0 < c.crop[0] <= MAX_SIDE and 0 < c.crop[1] <= MAX_SIDE):
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


# Renamed presets: the same values under a new name. A run's config.json that names one loads as its new name.
RENAMED: dict[str, str] = {
    "seed-simple": "article-simple",
    "seed-unet": "article-unet",
    "unet-strided": "article-unet-strided",
    "real-cpu": "cpu",
    "unet-t4": "full",
}


def save_config(path: Path, cfg: TrainConfig) -> None:
    write_json(path, cfg.to_json())


def load_config(path: Path) -> TrainConfig:
    """A run's (or a fold's) config.json, checked: a damaged or hand-edited one is one line naming it, what is wrong
    and how to mend it."""
    if not path.is_file():
        raise UserError(f"{path}: no config.json; is this a run folder made by `competition train`?")
    mend = ("fix that value, or restore the file (each trained fold keeps a copy in fold<k>/config.json); a run "
            "never trained can be deleted and trained again")
    record = read_json(path, mend)
    try:
        return TrainConfig.from_json(record, str(path))
    except UserError as e:
        what = str(e).removeprefix(f"{path}: ")
        raise damaged(path, what, mend) from e


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


