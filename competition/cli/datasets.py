"""Subcommands of the data stage: synth, info, folds, download, extract."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.fileio import check_file_out, check_folder
from .options import add_data, add_out, path_or_none
from .parser import AddCommand, Whole, duration


# --- synth ----------------------------------------------------------------------------------------
def cmd_synth(a: argparse.Namespace) -> None:
    from ..data.synth import SynthSpec, generate
    from ..base.console import say
    spec = SynthSpec(cars=a.cars, test=a.test, seed=a.synth_seed, zip=a.zip, varied=True)  # paints vary by view
    made = generate(check_folder(a.out, "--out"), spec, force=a.force)
    say(f"{'wrote' if made else 'already there:'} synthetic dataset {a.out} ({a.cars} cars x 16 views, "
        f"{a.test} test images{', zipped' if a.zip else ''})")


def add_synth(add: AddCommand) -> None:
    s = add("synth", cmd_synth, "write the synthetic Carvana-shaped dataset (the embedded default)",
            "--out data/synthetic")
    add_out(s, "the dataset's folder", default="data/synthetic")
    s.add_argument("--cars", type=Whole(2, 10_000), default=8, help="number of training cars, 16 views each")
    s.add_argument("--test", type=Whole(1, 200_000), default=32, help="number of test images")
    s.add_argument("--synth-seed", "--seed", dest="synth_seed", type=Whole(0, 2**32 - 1), default=0,
                   help="random seed of the drawings (--seed: its former spelling)")
    s.add_argument("--zip", action="store_true", help="write Kaggle's zips instead of folders")
    s.add_argument("--force", action="store_true",
                   help="replace what --out holds (another set, other files) once this set is complete")


# --- info -----------------------------------------------------------------------------------------
def cmd_info(a: argparse.Namespace) -> None:
    from ..data.layout import open_dataset
    ds = open_dataset(a.data)
    print(ds.describe())
    if ds.train_images is not None:
        print(f"  {len(ds.train_ids)} training images with masks")


def add_info(add: AddCommand) -> None:
    s = add("info", cmd_info, "describe a data root: where images, masks and test images come from",
            "--data data/carvana")
    add_data(s)


# --- folds ----------------------------------------------------------------------------------------
def cmd_folds(a: argparse.Namespace) -> None:
    from ..data.folds import assign_folds, write_folds
    from ..data.layout import open_dataset
    from ..base.console import say
    out = Path(a.out)
    trained = sorted(out.parent.glob("fold*/model.keras"))
    check_file_out(out, force=a.force, holds=f"the folds of the run {out.parent.name}, which {len(trained)} trained "
                                              f"fold(s) chose their photos by" if trained else "")
    folds = assign_folds(open_dataset(a.data).train_ids, a.k, a.fold_seed)
    write_folds(a.out, folds)
    sizes = [list(folds.values()).count(f) for f in range(a.k)]
    say(f"wrote {a.out}: {a.k} folds grouped by car, images per fold {sizes}")


def add_folds_command(add: AddCommand) -> None:
    s = add("folds", cmd_folds, "write folds.csv: K folds grouped by car",
            "--data data/carvana --out runs/unet/folds.csv")
    add_data(s)
    s.add_argument("--k", type=Whole(2, 100), default=5, help="number of folds, grouped by car")
    s.add_argument("--fold-seed", "--seed", dest="fold_seed", type=Whole(0, 2**32 - 1), default=42,
                   help="seed of the assignment of cars to folds (--seed: its former spelling)")
    add_out(s, "the folds file", default="folds.csv")
    s.add_argument("--force", action="store_true", help="replace an existing --out (a trained run's folds.csv too)")


# --- download -------------------------------------------------------------------------------------
def cmd_download(a: argparse.Namespace) -> None:
    from ..kaggle.download import download
    download(check_folder(a.out, "--out"), files=a.files, force=a.force)


def add_download(add: AddCommand) -> None:
    s = add("download", cmd_download, "download the competition files with the official kaggle package",
            "--out data/carvana")
    s.add_argument("--out", "--dest", dest="out", default="data/carvana", metavar="DIR",
                   help="where the files go (--dest: its former spelling)")
    s.add_argument("--files", nargs="*", default=None,
                   help="files to fetch (default: train_hq.zip train_masks.zip train_masks.csv metadata.csv "
                        "sample_submission.csv test_hq.zip)")
    s.add_argument("--force", action="store_true", help="download again even when complete")


# --- extract --------------------------------------------------------------------------------------
def cmd_extract(a: argparse.Namespace) -> None:
    from ..data.extract import extract
    to = path_or_none(a.out)
    extract(path_or_none(a.data), budget=a.budget, to=to and check_folder(to, "--out"), dry_run=a.dry_run)


def add_extract(add: AddCommand) -> None:
    s = add("extract", cmd_extract, "plan and extract the zips within a disk budget; the rest is read in place",
            "--data data/carvana --budget 20GB --dry-run")
    add_data(s)
    s.add_argument("--budget", type=duration, default=None, metavar="SIZE",
                   help="e.g. 20GB (default: 20GB in a Kaggle kernel, else free disk)")
    s.add_argument("--out", "--to", dest="out", default=None, metavar="DIR",
                   help="where to extract (--to: its former spelling) (default: the data root, or /kaggle/working)")
    s.add_argument("--dry-run", action="store_true", help="print the plan only")
