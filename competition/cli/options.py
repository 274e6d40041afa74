"""Options shared by several subcommands, each declared once (name, meaning, default), and the parsers of their
values. A subcommand adds what it takes; docs/guide.md lists them all (competition/cli/table.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import UserError
from ..base.tta import TTAS
from ..config import REFINES
from ..kaggle.machines import DEFAULT, accelerator_help
from .parser import Number, Once, Whole, duration

RUN_HELP = "the run: NAME for runs/NAME, or a path to its folder"
BLEND_HELP = "--run A --run B[@FOLDS][:WEIGHT] (docs/guide.md, Blending)"


def add_data(s: argparse.ArgumentParser, help: str = "") -> None:
    s.add_argument("--data", default=None, metavar="DIR",
                   help=help or "the data root: a folder, Kaggle's zips, or the competition's input in a kernel "
                                "(default: /kaggle/input's inside a kernel, else required)")


def add_run(s: argparse.ArgumentParser, help: str = "", many: bool = False, required: bool = False,
            name_alias: bool = False) -> None:
    """--run: one run (given twice is an error), or with many=True one or more (a blend)."""
    names = ["--run", "--name"] if name_alias else ["--run"]  # --name: its former spelling
    s.add_argument(*names, dest="run", default=None, required=required, action="append" if many else Once,
                   metavar="RUN", help=f"{RUN_HELP}{'; ' + help if help else ''}")


def add_blend(s: argparse.ArgumentParser) -> None:
    s.add_argument("--blend", default=None, help="a blend's name (default: its runs and weights, e.g. A+B)")


def add_fold(s: argparse.ArgumentParser, help: str, default=0) -> None:
    s.add_argument("--fold", type=Whole(0, 99) if isinstance(default, int) else str, default=default, help=help)


def add_folds(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--folds", default=None, metavar="0,1,...", help=help)


def add_tta(s: argparse.ArgumentParser) -> None:
    s.add_argument("--tta", default="hflip", choices=list(TTAS),
                   help="test-time augmentation: none, or hflip (the mean with the mirrored photo's prediction)")


def add_refine(s: argparse.ArgumentParser, help: str = "") -> None:
    s.add_argument("--refine", default=None, choices=REFINES,
                   help=help or "how probabilities reach 1918x1280: 'guided' snaps them to the photo's edges, 'net' "
                                "corrects them first with the run's refiner net (`refiner`), 'none' resizes them "
                                "alone (default: the run's config; demo uses guided, cpu net)")


def add_threshold(s: argparse.ArgumentParser) -> None:
    s.add_argument("--threshold", type=Number(0, 1, low_open=True, high_open=True), default=None,
                   help="probability threshold of a mask pixel (default: the run's, tuned by --tune-threshold)")


def add_tune_threshold(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--tune-threshold", action="store_true", help=help)


def add_time_limit(s: argparse.ArgumentParser, unit: str) -> None:
    s.add_argument("--time-limit", type=duration, default=None, metavar="DURATION",
                   help=f"e.g. 11h30m: stop after the {unit} whose successor would pass it; rerun to resume "
                        f"(default: no limit)")


def add_mirror(s: argparse.ArgumentParser, what: str, when: str) -> None:
    s.add_argument("--mirror", default=None, metavar="DIR",
                   help=f"a folder to copy {what} into, {when} (default: none)")


def add_out(s: argparse.ArgumentParser, help: str, default: str | None = None, required: bool = False) -> None:
    s.add_argument("--out", default=default, required=required, help=help)


def add_preset(s: argparse.ArgumentParser, default: str | None = "unet", help: str = "") -> None:
    from ..config import offered_help
    s.add_argument("--preset", default=default, metavar="NAME",
                   help=help or f"{offered_help()} (default: an existing run's own config, else unet)")


def add_accelerator(s: argparse.ArgumentParser, here: bool = False) -> None:
    """--accelerator (formerly plan's --gpu): a key of kaggle/machines.py's table, checked there; `here` (plan):
    this machine's CPU as well."""
    mine = "; here: this machine's CPU, from step times measured here" if here else ""
    s.add_argument("--accelerator", "--gpu", dest="accelerator", default=DEFAULT, metavar="NAME",
                   help=f"the Kaggle session's accelerator: {accelerator_help()}{mine} (--gpu: plan's former "
                        "spelling)")


def add_session_hours(s: argparse.ArgumentParser) -> None:
    """--session-hours: a Kaggle session's length, for `kernel` (what the kernel stops within) and `plan`."""
    s.add_argument("--session-hours", type=Number(0.5, 24), default=None,
                   help="a Kaggle session's length in hours (default: KAGGLE_SESSION_HOURS, else Kaggle's 12)")


def add_batch(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--batch", type=Whole(1, 4096), default=None, help=help)


def add_shard(s: argparse.ArgumentParser, help: str = "predict the i-th of N contiguous slices of the test set") -> None:
    s.add_argument("--shard", default=None, metavar="i/N", help=f"{help} (default: all of it)")


def add_sample(s: argparse.ArgumentParser) -> None:
    s.add_argument("--sample", default=None, metavar="CSV",
                   help="the sample submission (default: sample_submission.csv of --data)")


def add_size(s: argparse.ArgumentParser, help: str = "HEIGHTxWIDTH of the model's input, e.g. 640x960 "
                                                     "(default: the preset's)") -> None:
    s.add_argument("--size", default=None, metavar="HxW", help=help)


def add_crop(s: argparse.ArgumentParser) -> None:
    s.add_argument("--crop", default=None, metavar="HxW",
                   help="train on random HEIGHTxWIDTH crops of the --size frame (validation, scoring and prediction "
                        "use whole frames), or 'none' (default: the preset's)")


def add_k(s: argparse.ArgumentParser, default: int | None = None) -> None:
    s.add_argument("--k", type=Whole(2, 100), default=default,
                   help="number of folds, grouped by car" + ("" if default else " (default: the preset's)"))


def add_epochs(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--epochs", type=Whole(1, 10_000), default=None, help=help)


def add_encoder(s: argparse.ArgumentParser, kernel: bool = False) -> None:
    """--encoder, --encoder-weights, --freeze-encoder (train, and train kernels)."""
    from ..models.encoders import ENCODERS, FINETUNE_LR_FACTOR
    s.add_argument("--encoder", default=None, choices=list(ENCODERS),
                   help="a pretrained keras.applications backbone under the U-Net decoder (default: none)")
    s.add_argument("--encoder-weights", default=None,
                   help="the encoder's weights: imagenet (needs internet or the file in ~/.keras/models/) | none" +
                        (" (a file: --weights-dataset)" if kernel else " | PATH (.h5 / .weights.h5 of the backbone, "
                                                                      "or a .keras model with this encoder)") +
                        " (default: imagenet)")
    s.add_argument("--freeze-encoder", type=Whole(0, 10_000), default=None, metavar="EPOCHS",
                   help=f"train the decoder alone for EPOCHS epochs, then everything at lr x {FINETUNE_LR_FACTOR:g} "
                        f"(default: 0)")


# --- values -------------------------------------------------------------------------------------------------
def folds_arg(text: str | None) -> list[int] | None:
    """--folds '0,1,2' -> [0, 1, 2] (None: not given)."""
    if not text:
        return None
    try:
        folds = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--folds {text!r}: expected comma-separated fold numbers, e.g. 0,1,2") from None
    twice = sorted({f for f in folds if folds.count(f) > 1})
    if twice or any(f < 0 for f in folds):
        raise UserError(f"--folds {text}: " + (f"fold {twice[0]} twice" if twice else "a negative fold") +
                        "; each fold once, e.g. 0,1,2")
    return folds


def shard_arg(text: str | None) -> tuple[int, int] | None:
    """--shard 'i/N' -> (i, N) (None: not given)."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < N")
    return i, n


def fold_number(text: str, k: int) -> int:
    """--fold 'k' of train, checked against the run's k."""
    from ..data.folds import check_fold
    try:
        fold = int(text)
    except ValueError:
        raise UserError(f"--fold {text!r}: expected a number 0..{k - 1} or 'all'") from None
    check_fold(fold, k)
    return fold


def path_or_none(text: str | None) -> Path | None:
    """A Path from an optional path option."""
    return Path(text) if text else None
