"""The one CLI: `python -m competition <command>`. argparse lives only here; each command calls a
typed function of its stage's module. User errors are one line with exit code 2 (`--debug` shows
the traceback)."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from .errors import UserError  # noqa: E402


# --- data -----------------------------------------------------------------------------------------
def cmd_synth(a: argparse.Namespace) -> None:
    from .data.synth import SynthSpec, generate
    from .progress import say
    spec = SynthSpec(cars=a.cars, test=a.test, seed=a.seed, zip=a.zip)
    made = generate(Path(a.out), spec)
    say(f"{'wrote' if made else 'already there:'} synthetic dataset {a.out} ({a.cars} cars x 16 views, "
        f"{a.test} test images{', zipped' if a.zip else ''})")


def cmd_info(a: argparse.Namespace) -> None:
    from .data.layout import open_dataset
    ds = open_dataset(a.data)
    print(ds.describe())
    if ds.train_images is not None:
        print(f"  {len(ds.train_ids)} training images with masks")


def cmd_folds(a: argparse.Namespace) -> None:
    from .data.folds import assign_folds, write_folds
    from .data.layout import open_dataset
    from .progress import say
    folds = assign_folds(open_dataset(a.data).train_ids, a.k, a.seed)
    write_folds(a.out, folds)
    sizes = [list(folds.values()).count(f) for f in range(a.k)]
    say(f"wrote {a.out}: {a.k} folds grouped by car, images per fold {sizes}")


def cmd_download(a: argparse.Namespace) -> None:
    from .data.download import download
    download(Path(a.dest), files=a.files, force=a.force)


def cmd_extract(a: argparse.Namespace) -> None:
    from .data.extract import extract
    extract(Path(a.data) if a.data else None, budget=a.budget, to=Path(a.to) if a.to else None,
            dry_run=a.dry_run)


# --- training -------------------------------------------------------------------------------------
def _train_config(a: argparse.Namespace):
    from .config import load_config, parse_crop, parse_size, preset, run_path
    size = parse_size(a.size) if a.size else (None, None)
    augment = None if a.augment is None else tuple(x for x in a.augment.split(",") if x and x != "none")
    overrides = dict(arch=a.model, depth=a.depth, filters=a.filters, pooling=a.pooling, height=size[0],
                     width=size[1], fit=a.fit, loss=a.loss, bce_weight=a.bce_weight, lr=a.lr, batch=a.batch,
                     epochs=a.epochs, patience=a.patience, augment=augment, k=a.k, max_images=a.max_images,
                     seed=a.seed, mixed_precision=a.mixed_precision, batchnorm=a.batchnorm,
                     dropout=a.dropout, schedule=a.schedule, warmup=a.warmup, clipnorm=a.clipnorm,
                     crop=None if a.crop is None else parse_crop(a.crop), encoder=a.encoder,
                     encoder_weights=a.encoder_weights, freeze_encoder=a.freeze_encoder)
    run_config = run_path(a.run, a.runs) / "config.json" if a.run else None
    if a.preset is None and run_config is not None and run_config.is_file():
        base = load_config(run_config)  # an existing run: its own config, overrides on top
        return base.replace(**{k: v for k, v in overrides.items() if v is not None})
    return preset(a.preset or "unet", **overrides)


def cmd_train(a: argparse.Namespace) -> None:
    from .config import run_path
    from .timelimit import deadline
    from .train import train
    limit = deadline(a.time_limit)
    cfg = _train_config(a)
    run_dir = run_path(a.run or a.preset or cfg.preset, a.runs)  # the preset as typed: old names keep old runs
    folds = range(cfg.k) if a.fold == "all" else [_fold_number(a.fold, cfg.k)]
    for fold in folds:
        summary = train(cfg, data=a.data, run_dir=run_dir, fold=fold,
                        cache_dir=None if a.cache in ("none", "memory") else Path(a.cache),
                        hold=a.cache == "memory", force=a.force, time_limit=limit, mirror=Path(a.mirror) if a.mirror else None)
        if summary.get("time_limited"):
            break


def _fold_number(text: str, k: int) -> int:
    from .data.folds import check_fold
    try:
        fold = int(text)
    except ValueError:
        raise UserError(f"--fold {text!r}: expected a number 0..{k - 1} or 'all'") from None
    check_fold(fold, k)
    return fold


# --- inference and submission ---------------------------------------------------------------------
def _folds_arg(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--folds {text!r}: expected comma-separated fold numbers, e.g. 0,1,2") from None


def _shard_arg(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < N")
    return i, n


def cmd_predict(a: argparse.Namespace) -> None:
    from .inference.ensemble import parse_member
    from .predict import predict
    from .timelimit import deadline
    limit = deadline(a.time_limit)
    specs = [parse_member(r) for r in a.run]  # one run, or a blend of every one of them
    predict(specs, data=a.data, out=Path(a.out), folds=_folds_arg(a.folds), tta=a.tta, threshold=a.threshold,
            batch=a.batch, shard=_shard_arg(a.shard), limit=a.limit, time_limit=limit,
            mirror=Path(a.mirror) if a.mirror else None, name=a.blend, refine=a.refine)


def cmd_merge(a: argparse.Namespace) -> None:
    from .submission import merge
    merge([Path(p) for p in a.parts], Path(a.out), Path(a.sample) if a.sample else None, data=a.data)


def cmd_validate(a: argparse.Namespace) -> None:
    from .submission import validate_cli
    validate_cli(Path(a.file), Path(a.sample) if a.sample else None, data=a.data)


def cmd_made_as(a: argparse.Namespace) -> None:
    from .submission import made_otherwise
    differs = made_otherwise(Path(a.file), a.tta, a.refine, _folds_arg(a.folds))
    if differs:
        print(differs)


def cmd_submit(a: argparse.Namespace) -> None:
    from .submission import submit
    submit(Path(a.file), message=a.message, sample=Path(a.sample) if a.sample else None, data=a.data)


# --- scoring --------------------------------------------------------------------------------------
def cmd_score(a: argparse.Namespace) -> None:
    from . import score
    from .config import run_path
    from .inference.ensemble import parse_member
    if a.submission:
        score.score_submission(Path(a.submission), data=a.data)
        return
    if not a.run:
        raise UserError("score needs --run NAME (with --fold) or --submission FILE")
    runs = [parse_member(r) for r in a.run] if len(a.run) > 1 else run_path(a.run[0])  # a blend: each run beside it
    score.score_fold(runs, fold=a.fold, data=a.data, tta=a.tta, worst=a.worst, tune_threshold=a.tune_threshold,
                     threshold=a.threshold, refine=a.refine, name=a.blend)
    if len(a.run) == 1:
        from .report import report_folds  # draws what scoring saved
        report_folds(run_path(a.run[0]), data=a.data, folds=[a.fold])


def cmd_cv(a: argparse.Namespace) -> None:
    from .config import run_path
    from .inference.ensemble import parse_member
    from .score import cross_validate
    runs = [parse_member(r) for r in a.run] if len(a.run) > 1 else run_path(a.run[0])  # a blend: each run beside it
    cross_validate(runs, data=a.data, tta=a.tta, tune_threshold=a.tune_threshold, refine=a.refine, name=a.blend)
    if len(a.run) == 1:
        from .report import report_folds  # draws what scoring saved
        report_folds(run_path(a.run[0]), data=a.data)


def cmd_refiner(a: argparse.Namespace) -> None:
    from .config import run_path
    from .refiner import train_refiners
    train_refiners(run_path(a.run), data=a.data, steps=a.steps, test_only=a.test_only, learns_from=a.learn_from)


# --- kernels and benchmarks -----------------------------------------------------------------------
def cmd_kernel(a: argparse.Namespace) -> None:
    from . import kernel_queue, kernels
    from .config import run_path
    runs = a.run or []
    run_dir = run_path(runs[0]) if len(runs) == 1 else None  # the kernel is named after the folder's name
    name = run_dir.name if run_dir else None
    if len(runs) > 1:  # a predict kernel blending runs: named after the blend
        from .inference.ensemble import default_name, parse_member
        name = default_name([parse_member(r) for r in runs])
    every_fold = a.folds == "all"
    if a.action == "queue" or (a.action == "status" and a.fold is None and a.task == "train" and name):
        if not name:
            raise UserError("kernel queue: name the run, --run NAME")
        return kernel_queue.run_queue(name, Path(a.out)) if a.action == "queue" else kernel_queue.status_table(name)
    spec = kernels.KernelSpec(task=a.task, fold=a.fold or 0, folds=None if every_fold else _folds_arg(a.folds),
                              preset=a.preset, name=name, user=a.user, accelerator=a.accelerator,
                              shard=_shard_arg(a.shard), blend=runs if len(runs) > 1 else None,
                              train_kernels=a.train_kernels, epochs=a.epochs, encoder=a.encoder,
                              encoder_weights=a.encoder_weights, freeze_encoder=a.freeze_encoder,
                              weights_dataset=a.weights_dataset, filters=a.filters, refine=a.refine,
                              fresh=a.fresh, session_hours=a.session_hours)
    if a.task == "notebook":
        from .notebook import kernel_command
        return kernel_command(a.action, spec, Path(a.out))
    if every_fold and a.action != "push":
        raise UserError(f"--folds all: for `kernel push` (then `kernel queue`), not `kernel {a.action}`")
    if a.action == "build":
        kernels.build(spec, out_root=Path(a.out))
    elif a.action == "push" and every_fold:
        kernel_queue.push_all(spec, max_running=a.max_running, out_root=Path(a.out))
    elif a.action == "push":
        kernels.push(spec, out_root=Path(a.out))
    elif a.action == "status":
        kernels.status(spec)
    else:
        kernels.output(spec, dest=Path(a.dest) if a.dest else run_dir if a.task == "train" else None)


def cmd_plan(a: argparse.Namespace) -> None:
    from .config import parse_crop, parse_size, preset
    from .plan import plan
    size = parse_size(a.size) if a.size else (None, None)
    cfg = preset(a.preset, height=size[0], width=size[1], batch=a.batch, epochs=a.epochs, k=a.k,
                 crop=None if a.crop is None else parse_crop(a.crop), refine=a.refine)
    if (a.train_img_s is None) != (a.predict_img_s is None):
        raise UserError("state both --train-img-s and --predict-img-s (images/s on one GPU), or neither")
    stated = None if a.train_img_s is None else (a.train_img_s, a.predict_img_s)
    plan(cfg, _folds_arg(a.folds), a.tta, a.gpu, allow_split=a.allow_split, stated=stated,
         pipeline=a.pipeline_img_s)


def cmd_bench(a: argparse.Namespace) -> None:
    from .bench import run_bench
    run_bench(out=Path(a.out), quick=a.quick)


RUN_HELP = "the run: NAME for runs/NAME, or a path to its folder"


def _refine_arg(s: argparse.ArgumentParser) -> None:
    from .config import REFINES
    s.add_argument("--refine", default=None, choices=REFINES,
                   help="how probabilities reach 1918x1280: 'guided' snaps them to the photo's edges, 'net' corrects "
                        "them first with the run's refiner net (`refiner`), 'none' resizes them alone (default: the "
                        "run's config; demo and real-cpu-30 use guided, real-cpu net)")


def _encoder_args(s: argparse.ArgumentParser, kernel: bool = False) -> None:
    """--encoder, --encoder-weights, --freeze-encoder (train, and train kernels)."""
    from .models.encoders import ENCODERS, FINETUNE_LR_FACTOR
    s.add_argument("--encoder", default=None, choices=list(ENCODERS),
                   help="a pretrained keras.applications backbone under the U-Net decoder (default: none)")
    s.add_argument("--encoder-weights", default=None,
                   help="imagenet (default; needs internet or the file in ~/.keras/models/) | none" +
                        (" (a file: --weights-dataset)" if kernel else " | PATH (.h5 / .weights.h5 of the backbone, "
                                                                      "or a .keras model with this encoder)"))
    s.add_argument("--freeze-encoder", type=int, default=None, metavar="EPOCHS",
                   help=f"train the decoder alone for EPOCHS epochs, then everything at lr x {FINETUNE_LR_FACTOR:g}")

class _Once(argparse.Action):
    """An option that may be given once: a second `--run` is an error, never silently the one used."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}): this command "
                         f"takes one run (predict, score and cv blend several)")
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from .config import REFINES
    p = argparse.ArgumentParser(prog="python -m competition",
                                description="Carvana Image Masking Challenge toolkit.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    s = add("synth", cmd_synth, "write the synthetic Carvana-shaped dataset (the embedded default)")
    s.add_argument("--out", default="data/synthetic")
    s.add_argument("--cars", type=int, default=8)
    s.add_argument("--test", type=int, default=32, help="number of test images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--zip", action="store_true", help="write Kaggle's zips instead of folders")

    s = add("info", cmd_info, "describe a data root: where images, masks and test images come from")
    s.add_argument("--data", default=None)

    s = add("folds", cmd_folds, "write folds.csv: K folds grouped by car")
    s.add_argument("--data", default=None)
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--out", default="folds.csv")

    s = add("download", cmd_download, "download the competition files with the official kaggle package")
    s.add_argument("--dest", default="data/carvana")
    s.add_argument("--files", nargs="*", default=None,
                   help="files to fetch (default: train_hq.zip train_masks.zip train_masks.csv metadata.csv "
                        "sample_submission.csv test_hq.zip)")
    s.add_argument("--force", action="store_true", help="download again even when complete")

    s = add("extract", cmd_extract, "plan and extract the zips within a disk budget; the rest is read in place")
    s.add_argument("--data", default=None)
    s.add_argument("--budget", default=None, help="e.g. 20GB (default: 20GB in a Kaggle kernel, else free disk)")
    s.add_argument("--to", default=None, help="where to extract (default: the data root, or /kaggle/working)")
    s.add_argument("--dry-run", action="store_true", help="print the plan only")

    s = add("train", cmd_train, "train one fold (or all) of a U-Net; rerun to resume")
    s.add_argument("--fold", default="0", help="fold number, or 'all'")
    from .config import PRESET_ALIASES, PRESETS
    s.add_argument("--preset", default=None, help=f"{' | '.join(PRESETS)} (former names "
                   f"{', '.join(PRESET_ALIASES)} still work)")
    s.add_argument("--data", default=None)
    s.add_argument("--run", "--name", dest="run", default=None, action=_Once,
                   help=f"{RUN_HELP} (default: the preset's name); outputs in its fold<k>/")
    s.add_argument("--runs", default="runs", help="the folder a bare --run NAME is in")
    s.add_argument("--cache", default="cache",
                   help="folder for the resized-image cache, 'none' to decode every epoch (no disk), or 'memory' "
                        "to decode every epoch from the files' bytes held in RAM")
    s.add_argument("--force", action="store_true", help="retrain a fold that is already complete")
    s.add_argument("--model", default=None, choices=["unet", "simple"])
    s.add_argument("--depth", type=int)
    s.add_argument("--filters", type=int)
    s.add_argument("--pooling", choices=["max", "strided"])
    s.add_argument("--size", help="HEIGHTxWIDTH, e.g. 640x960")
    s.add_argument("--fit", choices=["resize", "pad"])
    s.add_argument("--crop", help="HEIGHTxWIDTH: train on random crops of the --size frame (validation, scoring "
                   "and prediction use whole frames), or 'none'")
    s.add_argument("--loss", help="dice | dice_global | bce | dice_bce")
    s.add_argument("--bce-weight", type=float)
    s.add_argument("--lr", type=float)
    s.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule after warm-up")
    s.add_argument("--warmup", type=int, help="epochs of linear learning-rate warm-up")
    s.add_argument("--clipnorm", type=float, help="clip gradients to this global norm (0: off)")
    s.add_argument("--batch", type=int, help="batch size per replica")
    s.add_argument("--epochs", type=int)
    s.add_argument("--patience", type=int)
    s.add_argument("--augment", help="comma list of flip,rotate,contrast or 'none'")
    s.add_argument("--k", type=int)
    s.add_argument("--max-images", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--dropout", type=float)
    s.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None)
    _encoder_args(s)
    s.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                   help="float16 compute on GPUs, bfloat16 on CPUs with AVX512-BF16/AMX (default: the preset's; "
                        "make: MIXED_PRECISION=1|0)")
    s.add_argument("--time-limit", default=None,
                   help="e.g. 11h30m: stop after the epoch whose successor would pass it; rerun to resume")
    s.add_argument("--mirror", default=None,
                   help="copy the best model, history, curves and resumable backup here after every epoch")

    s = add("predict", cmd_predict, "predict the test set into a submission CSV (resumable, shardable)")
    s.add_argument("--run", required=True, action="append", help=f"{RUN_HELP}; give it again to blend runs: "
                   f"--run A --run B[@FOLDS][:WEIGHT] (docs/guide.md, Blending)")
    s.add_argument("--blend", default=None, help="a blend's name (default: its runs and weights, e.g. A+B)")
    s.add_argument("--data", default=None)
    s.add_argument("--out", required=True)
    s.add_argument("--folds", default=None, help="e.g. 0,1,2 (default: every trained fold)")
    s.add_argument("--tta", default="hflip", choices=["none", "hflip"])
    s.add_argument("--threshold", type=float, default=None, help="default: the run's (tuned) threshold")
    _refine_arg(s)
    s.add_argument("--batch", type=int, default=None)
    s.add_argument("--shard", default=None, help="i/N: predict the i-th of N contiguous slices")
    s.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--time-limit", default=None,
                   help="e.g. 11h: stop after the chunk of rows whose successor would pass it; rerun to resume")
    s.add_argument("--mirror", default=None,
                   help="copy the partial submission and its progress record here as each chunk is written")

    s = add("merge", cmd_merge, "join shard files into one submission, checking they cover the sample once")
    s.add_argument("parts", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--sample", default=None)
    s.add_argument("--data", default=None)

    s = add("made-as", cmd_made_as, "print how a submission's record (<file>.json) differs from these settings "
                                    "(nothing when it matches; `make submit` predicts again when it does not)")
    s.add_argument("file")
    s.add_argument("--tta", default="hflip", choices=["none", "hflip"])
    s.add_argument("--refine", default=None, choices=REFINES)
    s.add_argument("--folds", default=None, help="e.g. 0,1,2 (default: not compared)")

    s = add("validate", cmd_validate, "check a submission CSV against the sample submission")
    s.add_argument("file")
    s.add_argument("--sample", default=None)
    s.add_argument("--data", default=None, help="data root holding sample_submission.csv")

    s = add("submit", cmd_submit, "validate a submission and upload it with the kaggle package")
    s.add_argument("file")
    s.add_argument("--message", "-m", default="competition toolkit submission")
    s.add_argument("--sample", default=None)
    s.add_argument("--data", default=None)

    s = add("score", cmd_score, "Kaggle's dice on a held-out fold (or of a submission of training ids)")
    s.add_argument("--run", default=None, action="append",
                   help=f"{RUN_HELP}; give it again to score a blend of runs: --run A --run B[:WEIGHT]")
    s.add_argument("--blend", default=None, help="a blend's name (default: its runs and weights, e.g. A+B)")
    s.add_argument("--fold", type=int, default=0)
    s.add_argument("--data", default=None)
    s.add_argument("--tta", default="hflip", choices=["none", "hflip"])
    s.add_argument("--worst", type=int, default=10, help="overlays for the N worst images")
    s.add_argument("--threshold", type=float, default=None)
    _refine_arg(s)
    s.add_argument("--tune-threshold", action="store_true",
                   help="search the best threshold and save it in the run's config.json (make: TUNE=1)")
    s.add_argument("--submission", default=None, help="score this CSV against the training masks")

    s = add("cv", cmd_cv, "score every trained fold and write runs/<name>/cv.md")
    s.add_argument("--run", required=True, action="append",
                   help=f"{RUN_HELP}; give it again for a blend of runs (--run A --run B[:WEIGHT]): every fold "
                        f"they share, each run beside the blend, into runs/blends/<name>/cv.md")
    s.add_argument("--blend", default=None, help="a blend's name (default: its runs and weights, e.g. A+B)")
    s.add_argument("--data", default=None)
    s.add_argument("--tta", default="hflip", choices=["none", "hflip"])
    _refine_arg(s)
    s.add_argument("--tune-threshold", action="store_true",
                   help="save the best threshold over every fold's held-out images in the run's config.json "
                        "(what a fold ensemble should use; not for a blend)")

    s = add("refiner", cmd_refiner, "train the second-stage refiner net on a run's out-of-fold predictions "
                                    "(then score, cv, predict with --refine net)")
    s.add_argument("--run", required=True, help=RUN_HELP)
    s.add_argument("--data", default=None)
    s.add_argument("--steps", type=int, default=None,
                   help="training batches per refiner (default: the run's config's refiner_steps, 1000 unless "
                        "its preset says otherwise)")
    s.add_argument("--test-only", action="store_true",
                   help="train all.keras alone (what predict uses), from every trained fold's held-out photos "
                        "(or, learning from training photos, the first fold's); one trained fold is enough (a "
                        "predict kernel does this)")
    from .runs import LEARNS_FROM
    s.add_argument("--learn-from", choices=list(LEARNS_FROM), default=None,
                   help="default: the run's config's refiner_from (held-out unless its preset says otherwise). "
                        "held-out: each fold's refiner learns from the other folds' held-out predictions; "
                        "training: from its own model's predictions on its own training photos, so one trained fold "
                        "is enough (for short runs, whose training dice is near their validation dice)")

    s = add("kernel", cmd_kernel, "build, push and follow Kaggle kernels that train or predict on GPUs")
    s.add_argument("action", choices=["build", "push", "status", "output", "queue"],
                   help="queue: push the queued folds (push --folds all) as earlier ones end; status --run R "
                        "without --fold: every fold's kernel in one table")
    s.add_argument("--task", default="train", choices=["train", "predict", "notebook"])
    s.add_argument("--fold", type=int, default=None, help="train: the fold to train (default 0)")
    s.add_argument("--folds", default=None, help="predict: the folds to ensemble, e.g. 0,1,2,3,4; train push: "
                                                 "all, every fold, --max-running at a time (then `kernel queue`)")
    s.add_argument("--max-running", type=int, default=2,
                   help="push --folds all: Kaggle sessions at a time (Kaggle runs about 2 GPU sessions at once)")
    s.add_argument("--fresh", action="store_true",
                   help="push: start over, ignoring this kernel's earlier output (its progress is lost)")
    s.add_argument("--session-hours", type=float, default=None,
                   help="the kernel's session length on Kaggle (default: KAGGLE_SESSION_HOURS, else 12)")
    s.add_argument("--preset", default="unet")
    s.add_argument("--run", "--name", dest="run", default=None, action="append",
                   help=f"{RUN_HELP} (default: the preset's name); names the kernel; train output goes there; "
                        f"predict: give it again to blend runs, --run A --run B[@FOLDS][:WEIGHT]")
    s.add_argument("--user", default=None, help="Kaggle user name (default: from the kaggle config)")
    s.add_argument("--accelerator", default="t4x2",
                   help="t4x2 (2x T4, default) | p100 (one P100, Kaggle's default GPU; no tensor cores) | l4 | none")
    s.add_argument("--shard", default=None, help="predict: i/N slice of the test set")
    s.add_argument("--train-kernels", default=None, help="predict: comma list of user/slug train kernels")
    s.add_argument("--epochs", type=int, default=None, help="train: override the preset's epochs (e.g. 1 to try it)")
    _encoder_args(s, kernel=True)
    s.add_argument("--filters", type=int, default=None, help="train: override the preset's filters (e.g. 16 with an encoder)")
    s.add_argument("--weights-dataset", default=None,
                   help="train: user/slug of a Kaggle dataset holding the encoder's weights file (internet stays off)")
    s.add_argument("--refine", default=None, choices=REFINES,
                   help="predict: how probabilities reach 1918x1280 (default: the run's config); 'net' makes the "
                        "kernel train the refiner on the folds' held-out predictions first (`refiner --test-only`)")
    s.add_argument("--out", default="kernels/build", help="where push folders are written")
    s.add_argument("--dest", default=None, help="output: where to put the kernel's outputs")

    s = add("bench", cmd_bench, "measure speed against baselines run side by side; writes bench/")
    s.add_argument("--quick", action="store_true")
    s.add_argument("--out", default="bench")

    s = add("plan", cmd_plan, "what a recipe costs in Kaggle GPU hours, sessions, shards and weekly quota")
    s.add_argument("--preset", default="unet")
    s.add_argument("--folds", default=None, help="e.g. 0,1,2,3,4 (default: all k)")
    s.add_argument("--tta", default="hflip", choices=["none", "hflip"])
    s.add_argument("--gpu", default="t4x2", choices=["t4x2", "t4", "p100", "l4"], help="the kernel's accelerator")
    s.add_argument("--size", help="HEIGHTxWIDTH")
    s.add_argument("--crop", help="HEIGHTxWIDTH or none")
    s.add_argument("--batch", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--k", type=int)
    s.add_argument("--refine", default=None, choices=REFINES, help="the test pass's refinement (default: the preset's)")
    s.add_argument("--train-img-s", type=float, help="stated training images/s on one GPU (with --predict-img-s)")
    s.add_argument("--predict-img-s", type=float, help="stated whole-frame images/s on one GPU, one pass")
    s.add_argument("--pipeline-img-s", type=float,
                   help="stated training inputs/s the session's CPUs decode and augment (default: measured per "
                        "core x 4 for full-resolution decodes, else no limit)")
    s.add_argument("--allow-split", action="store_true",
                   help="plan resumed sessions for a fold, or shards for the test pass, instead of refusing")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .progress import set_quiet
    set_quiet(args.quiet)
    if not args.debug:  # TensorFlow's start-up lines off stderr, whenever (if ever) a command imports it
        from .quiet import install
        install()
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
