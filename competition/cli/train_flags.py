"""train's flags, generated from TrainConfig's fields (name, type, help, the default preset's value), and mapped
back to TrainConfig overrides: a new field is a new flag with nothing else to write. The few exceptions (--size
HxW for height and width, --model for arch, --crop, --augment lists) are the tables below."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..config import (ARCHS, AUGMENTS, POOLINGS, REFINER_FROM, REFINES, SCHEDULES, TrainConfig, parse_crop, parse_size,
                      preset)
from ..config.settings import RANGES
from .options import add_crop, add_encoder, add_size
from .parser import Number, Whole

DEFAULT_PRESET = "unet"
NOT_FLAGS = ("preset", "version")  # --preset is train's own option; the version is the file format's
# field -> flag, where the flag is not the field's name
RENAMED = {"arch": "--model"}
FORMER = {"refiner_from": "--learn-from"}  # field -> its flag's former spelling, still accepted (parser.OLD_SPELLINGS)
CHOICES = {"arch": ARCHS, "pooling": POOLINGS, "fit": ("resize", "pad"), "schedule": SCHEDULES,
           "image_interp": ("area", "bilinear", "nearest"), "monitor": ("val_loss", "val_dice"), "refine": REFINES,
           "refiner_from": REFINER_FROM}  # loss: checked by the config, whose error names the choices
TYPES = ("int", "float", "str")
BOOLS = ("bool",)
# fields read from a flag of another shape (declared by `special`, parsed by `special_overrides`)
SPECIAL = ("height", "width", "crop", "augment", "encoder", "encoder_weights", "freeze_encoder")


def value_type(name: str, kind: str):
    """A generated flag's type: a number checked against the config's own range (settings.RANGES) as the command
    line is read; a string as it is (the config checks its choices)."""
    if kind == "str":
        return str
    low, high, low_open = RANGES.get(name, (0, 2**31 - 1, False))
    return Whole(int(low), int(high)) if kind == "int" else Number(low, high, low_open)


def flag_of(name: str) -> str:
    """The train flag of a TrainConfig field."""
    return RENAMED.get(name, "--" + name.replace("_", "-"))


def generated_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that become a flag of their own name and type."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS + SPECIAL]


def add_train_flags(s: argparse.ArgumentParser) -> None:
    """Every user-settable TrainConfig field as a train flag (default None: the preset's, or an existing run's)."""
    base = preset(DEFAULT_PRESET)
    group = s.add_argument_group("the run's config, for tuning (each overrides --config's, the preset's or an "
                                 "existing run's value; `train --help` lists the common options above)")
    for f in generated_fields():
        shown = getattr(base, f.name)
        help = f"{f.metadata.get('help', f.name)} (default: the preset's; {DEFAULT_PRESET}: {shown})"
        kwargs = dict(dest=f.name, default=None, help=help.replace("%", "%%"))
        if f.type in BOOLS:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type in TYPES:
            kwargs["type"] = value_type(f.name, f.type)
            if f.name in CHOICES:
                kwargs["choices"] = list(CHOICES[f.name])
        else:
            raise TypeError(f"TrainConfig.{f.name}: type {f.type} has no flag; add it to SPECIAL in train_flags.py")
        group.add_argument(flag_of(f.name), *([FORMER[f.name]] if f.name in FORMER else []), **kwargs)
    special(group)


def special(s) -> None:
    """The fields whose flags take another shape: --size HxW, --crop HxW|none, --augment a,b|none, the encoder's."""
    add_size(s)
    add_crop(s)
    s.add_argument("--augment", default=None, metavar="LIST",
                   help=f"comma list of {','.join(AUGMENTS)}, or 'none' (default: the preset's)")
    add_encoder(s)


def special_overrides(a: argparse.Namespace) -> dict:
    """TrainConfig overrides of the special flags (None: not given)."""
    height, width = parse_size(a.size) if a.size else (None, None)
    augment = None if a.augment is None else tuple(x for x in a.augment.split(",") if x and x != "none")
    return dict(height=height, width=width, augment=augment, crop=None if a.crop is None else parse_crop(a.crop),
                encoder=a.encoder, encoder_weights=a.encoder_weights, freeze_encoder=a.freeze_encoder)


def overrides(a: argparse.Namespace) -> dict:
    """Every TrainConfig field train's flags set, by field name (None: not given)."""
    values = {f.name: getattr(a, f.name) for f in generated_fields()}
    values.update(special_overrides(a))
    return values


def config_file(text: str) -> TrainConfig:
    """--config FILE: a JSON object of TrainConfig fields. A whole one (a run's config.json) is read as it is; a
    partial one (a few fields, and "preset" or not) sets those fields on its preset's values (default unet's).
    Either is checked as a run's config.json is: an unknown field, a wrong type, a value out of range, one line."""
    from ..base.errors import UserError
    from ..base.fileio import read_json
    path = Path(text)
    if not path.is_file():
        raise UserError(f"--config {text}: no such file (a JSON object of the run's settings, e.g. a run's "
                        f"config.json)")
    record = read_json(path, "fix it: a JSON object of the run's settings (a run's config.json is one)")
    if not isinstance(record, dict):
        raise UserError(f"--config {text}: {type(record).__name__} where a JSON object of settings was written")
    whole = {**preset(str(record.get("preset", DEFAULT_PRESET))).to_json(), **record}
    return TrainConfig.from_json(whole, f"--config {text}")


def train_config(a: argparse.Namespace) -> TrainConfig:
    """The config train runs: --config FILE (a TrainConfig as JSON: a run's config.json works as it is), else an
    existing run's own (when no --preset is given), else the preset; flags on top."""
    from ..base.errors import UserError
    from ..config import load_config
    from ..runs.folder import run_path
    given = overrides(a)
    if getattr(a, "config", None):
        if a.preset is not None:
            raise UserError(f"--config {a.config} and --preset {a.preset}: the file holds the preset's values; "
                            f"give one of them")
        return config_file(a.config).replace(**{k: v for k, v in given.items() if v is not None})
    run_config = run_path(a.run, a.runs) / "config.json" if a.run else None
    if a.preset is None and run_config is not None and run_config.is_file():
        base = load_config(run_config)  # an existing run: its own config, overrides on top
        return base.replace(**{k: v for k, v in given.items() if v is not None})
    return preset(a.preset or DEFAULT_PRESET, **given)
