"""What a kernel is before anything is written or sent: its spec (task, fold, run, options), its title and
slug (at most 50 characters, whatever the run name), its sources, and the one-line checks of bad input.

Used by the host side (`competition.kaggle.kernels`, `competition.kaggle.queue`, `competition.kaggle.notebook`); it talks to
nobody and writes nothing.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import UserError
from ..config import check_refine, preset
from ..data.folds import check_fold
from .api import credentials_help, username
from ..base.timelimit import parse_duration
from .machines import BUDGETS, DEFAULT, DEFAULT_BUDGET, accelerator, kernel_budget, session_hours

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # competition/
TEMPLATES = PACKAGE_DIR.parent / "kernels"
TASKS = ("train", "predict")
CODE_FILE = "run.py"
TITLE_MAX = 50  # Kaggle refuses longer kernel titles (and dataset titles and slugs)
# push --resume-from: the kernel's own earlier output mounted as its source, or the private dataset that
# `kernel checkpoint` made of it (for when Kaggle does not mount the latest self-source version)
RESUME_FROM = ("self", "dataset")
@dataclass(frozen=True)
class KernelSpec:
    """One kernel: train fold `fold` of run `name`, or predict the test set (or a shard) from its folds."""

    task: str = "train"
    fold: int = 0
    folds: list[int] | None = None        # predict: folds to ensemble (default: every fold of the preset)
    preset: str = "unet"
    name: str | None = None               # run name (default: the preset)
    user: str | None = None               # Kaggle user (default: from the kaggle config)
    accelerator: str = DEFAULT           # a key of machines.ACCELERATORS
    shard: tuple[int, int] | None = None  # predict: the i-th of N slices of the test set
    train_kernels: str | None = None      # predict: comma list of user/slug train kernels (default: derived)
    epochs: int | None = None             # train: override the preset's epochs (e.g. 1 for a smoke run)
    score: bool = True                    # train: score the fold after training, when the toolkit can
    tta: str = "hflip"                    # predict: test-time augmentation
    encoder: str | None = None            # train: a pretrained backbone (--encoder)
    encoder_weights: str | None = None    # train: imagenet (internet on) | none; default imagenet with an encoder
    freeze_encoder: int | None = None     # train: decoder-only epochs first (--freeze-encoder)
    weights_dataset: str | None = None    # train: user/slug of a dataset holding the encoder's weights file
    filters: int | None = None            # train: override the preset's filters (16 suits the encoders' decoder)
    blend: list[str] | None = None        # predict: the runs to blend, each NAME[@FOLDS][:WEIGHT] (name: the blend's)
    refine: str | None = None             # predict: none | guided | net (default: the run's config); net trains
                                          # the refiner on the gathered folds' held-out predictions first
    fresh: bool = False                   # push: start over, ignoring any earlier output of this kernel
    session_hours: float | None = None    # the session's length on Kaggle (default: KAGGLE_SESSION_HOURS, else 12)
    resume_from: str = "self"             # push: RESUME_FROM, where the new version finds the earlier progress
    accept_machine: bool = False          # the kernel trains on other GPUs than asked for (else it stops at once)
    time_limit: str | None = None         # a cap on the kernel's --time-limit (a trial stopped after its 1st epoch)
    budget: str | None = None             # train: `train --budget` in the kernel (BUDGETS): None, the session as a
                                          # cap; "session" or a duration, filled; "none": the preset's epochs

    @property
    def run_name(self) -> str:
        return self.name or self.preset

    @property
    def trial(self) -> bool:
        """A train kernel with --epochs: a smoke run, under its own slug so it never replaces the real fold's."""
        return self.task == "train" and self.epochs is not None


def budget_words(spec: KernelSpec) -> str:
    """What a train kernel's fold is planned to fit, in words (push and status say it)."""
    budget = kernel_budget(spec.budget, spec.epochs)
    if budget != spec.budget:  # a trial
        return f"{spec.epochs} epoch(s) (--epochs)"
    if budget is None:
        return DEFAULT_BUDGET
    return BUDGETS.get(budget, f"{budget}, filled")


# --- names ----------------------------------------------------------------------------------------
def slugify(text: str) -> str:
    """The slug Kaggle derives from a title: lower case, every run of other characters one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fit_title(name: str, rest: str) -> str:
    """"carvana <name> <rest>", at most TITLE_MAX characters: a long run name is cut and followed by a hash of the
    whole title, so the short title (and its slug) is stable and still one per run, fold and task."""
    full = f"carvana {name} {rest}"
    if len(full) <= TITLE_MAX:
        return full
    digest = hashlib.sha1(slugify(full).encode()).hexdigest()[:6]
    room = TITLE_MAX - len(f"carvana  {digest} {rest}")
    if room < 1:  # cannot happen for the titles below; a programming error if it does
        raise ValueError(f"title part {rest!r} leaves no room for the run name")
    cut = re.sub(r"[^A-Za-z0-9]+$", "", name[:room]) or name[:1]
    return f"carvana {cut} {digest} {rest}"


def train_title(name: str, fold: int, epochs: int | None = None) -> str:
    return fit_title(name, f"fold {fold}" + (f" trial {epochs} epochs" if epochs is not None else ""))


def _title_rest(spec: KernelSpec) -> str:
    """What follows "carvana <run>" in the kernel's title: the fold (and trial) or the prediction (and shard)."""
    if spec.task == "train":
        return f"fold {spec.fold}" + (f" trial {spec.epochs} epochs" if spec.trial else "")
    return "predict" + (f" shard {spec.shard[0]} of {spec.shard[1]}" if spec.shard else "")


def title(spec: KernelSpec) -> str:
    """The kernel's title (at most 50 characters); its slug is the kernel's id."""
    return fit_title(spec.run_name, _title_rest(spec))


def kernel_slug(spec: KernelSpec) -> str:
    return slugify(title(spec))


def checkpoint_title(spec: KernelSpec) -> str:
    """The title of the private dataset `kernel checkpoint` makes of the kernel's output (at most 50 characters)."""
    return fit_title(spec.run_name, f"{_title_rest(spec)} checkpoint")


def checkpoint_ref(spec: KernelSpec, user: str) -> str:
    """user/slug of the kernel's checkpoint dataset."""
    return f"{user}/{slugify(checkpoint_title(spec))}"


def kernel_ref(spec: KernelSpec, user: str) -> str:
    """user/slug, as Kaggle names the kernel."""
    return f"{user}/{kernel_slug(spec)}"


def preset_folds(preset_name: str) -> int:
    """Number of folds (k) of a preset; an unknown preset is a UserError listing the known ones."""
    return preset(preset_name).k


def predict_folds(spec: KernelSpec) -> list[int] | None:
    """Folds a predict kernel ensembles: --folds, else every fold of the preset (None: all it finds)."""
    if spec.folds is not None:
        return list(spec.folds)
    return None if spec.train_kernels else list(range(preset_folds(spec.preset)))


def blend_members(spec: KernelSpec, user: str) -> list[dict]:
    """A blending predict kernel's runs: name, folds (@FOLDS, else --folds, else the preset's), weight, kernels."""
    from ..inference.ensemble import parse_member
    members = []
    for text in spec.blend or []:
        m = parse_member(text)
        name = Path(m.run).name
        folds = list(m.folds or spec.folds or range(preset_folds(spec.preset)))
        members.append({"name": name, "folds": folds, "weight": m.weight,
                        "train_kernels": [f"{user}/{slugify(train_title(name, k))}" for k in folds]})
    return members


def saved_blend_threshold(spec: KernelSpec) -> float | None:
    """The threshold `score --tune-threshold` saved here for this blend (runs/blends/<name>/blend.json), if any."""
    from ..inference.ensemble import blend_dir, member_identity, parse_member, saved_threshold
    specs = [parse_member(text) for text in spec.blend or []]
    return saved_threshold(blend_dir(specs, spec.name), member_identity(specs)) if specs else None


def train_refs(spec: KernelSpec, user: str) -> list[str]:
    """The train kernels whose outputs a predict kernel reads (its kernel_sources)."""
    if spec.blend:
        return [ref for m in blend_members(spec, user) for ref in m["train_kernels"]]
    if spec.train_kernels:
        refs = [r.strip() for r in spec.train_kernels.split(",") if r.strip()]
        for r in refs:
            if r.count("/") > 1 or not all(r.split("/")):
                raise UserError(f"--train-kernels {r!r}: expected user/slug (or a slug of your own), "
                                f"e.g. {user}/{slugify(train_title(spec.run_name, 0))}")
        return [r if "/" in r else f"{user}/{r}" for r in refs]
    return [f"{user}/{slugify(train_title(spec.run_name, k))}" for k in predict_folds(spec) or []]


def check_spec(spec: KernelSpec) -> None:
    """One-line UserErrors for a kernel that cannot work, before anything is written or sent."""
    if spec.task not in TASKS:
        raise UserError(f"unknown kernel task {spec.task!r}: choose one of {', '.join(TASKS)}")
    accelerator(spec.accelerator)
    k = preset_folds(spec.preset)
    if not slugify(spec.run_name):
        raise UserError(f"--run {spec.run_name!r}: needs letters or digits (it becomes part of the kernel's slug)")
    if spec.task == "train":
        check_fold(spec.fold, k, f"preset {spec.preset}")
    if spec.blend and (spec.task != "predict" or spec.train_kernels):
        raise UserError("several --run: only a predict kernel blends runs, and it finds each run's train kernels "
                        "itself (carvana-<run>-fold-<k>; give a run's folds as --run NAME@0,1,2), without "
                        "--train-kernels" if spec.task == "predict" else
                        "several --run: a train kernel trains one run; blend runs in a predict kernel")
    for f in spec.folds or []:
        check_fold(f, k, f"preset {spec.preset}", "--folds: fold")
    session_hours(spec.session_hours)
    if spec.time_limit is not None:
        parse_duration(spec.time_limit)
    if spec.budget is not None:
        if spec.task != "train":
            raise UserError("--budget: for train kernels (the fold planned to fit it)")
        if spec.budget not in BUDGETS:
            parse_duration(spec.budget, "--budget")
        if spec.epochs is not None and spec.budget != "none":
            raise UserError(f"--budget {spec.budget} and --epochs {spec.epochs}: the budget chooses the epochs; "
                            f"give one of them")
    if spec.resume_from not in RESUME_FROM:
        raise UserError(f"--resume-from {spec.resume_from!r}: choose one of {', '.join(RESUME_FROM)} (dataset: the "
                        f"checkpoint `python -m competition kernel checkpoint` made of the kernel's output)")
    if spec.epochs is not None and spec.epochs < 1:
        raise UserError(f"--epochs {spec.epochs}: must be at least 1")
    if spec.filters is not None and (spec.filters < 1 or spec.task != "train"):
        raise UserError(f"--filters {spec.filters}: a positive number, for train kernels")
    check_encoder_options(spec)
    if spec.refine is not None:
        check_refine(spec.refine)
        if spec.task != "predict":
            raise UserError(f"--refine {spec.refine}: for predict kernels (a train kernel scores its fold as its "
                            f"config says)")
        if spec.blend and spec.refine == "net":
            raise UserError("--refine net: a blend kernel cannot use the refiner net yet (it would have to train "
                            "every run's refiner); blend with --refine guided or none, or blend the refined runs "
                            "locally (`predict --run A --run B --refine net`)")


def check_encoder_options(spec: KernelSpec) -> None:
    """One-line UserErrors for encoder options a kernel cannot honour."""
    if not spec.encoder:
        if spec.encoder_weights or spec.freeze_encoder or spec.weights_dataset:
            raise UserError("--encoder-weights, --freeze-encoder and --weights-dataset need --encoder NAME")
        return
    if spec.task != "train":
        raise UserError("--encoder is for train kernels: a predict kernel reads the encoder from the trained model")
    if spec.encoder_weights not in (None, "imagenet", "none"):
        raise UserError(f"--encoder-weights {spec.encoder_weights!r}: a kernel cannot read a file of this machine; "
                        f"upload it as a Kaggle dataset and pass --weights-dataset user/slug")
    if spec.weights_dataset is not None:
        if spec.encoder_weights == "none":
            raise UserError("--weights-dataset with --encoder-weights none: choose one")
        parts = spec.weights_dataset.split("/")
        if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p) for p in parts):
            raise UserError(f"--weights-dataset {spec.weights_dataset!r}: expected user/slug of a Kaggle dataset")
    # the run's config, as the kernel will make it: an unknown encoder or a size it cannot take fails here
    preset(spec.preset, encoder=spec.encoder, encoder_weights=spec.encoder_weights,
           freeze_encoder=spec.freeze_encoder, filters=spec.filters)


def needs_internet(spec: KernelSpec) -> bool:
    """A train kernel downloads ImageNet weights (asked for, or the default with an encoder) and no dataset has them."""
    return (spec.task == "train" and bool(spec.encoder) and spec.weights_dataset is None
            and (spec.encoder_weights or "imagenet") == "imagenet")


def resolve_user(user: str | None) -> str:
    """--user, else the user name of the kaggle config; neither is a one-line UserError."""
    if user is None:
        user = username()
        if not user:
            raise UserError(f"no Kaggle user name for the kernel's id: pass --user NAME (make: USER_ARG='--user NAME') "
                            f"or set up the kaggle credentials: {credentials_help()}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", user):
        raise UserError(f"--user {user!r} is not a Kaggle user name (letters, digits, '-' and '_')")
    return user


# --- the commands that name a kernel again (in hints and one-line errors) ------------------------------------
def checkpoint_command(spec: KernelSpec) -> str:
    """The command that versions the kernel's output as its private checkpoint dataset."""
    return f"python -m competition kernel checkpoint {spec_options(spec)}" + (
        f" --epochs {spec.epochs}" if spec.epochs is not None else "")


def fix_line(spec: KernelSpec) -> str:
    """What a kernel that found the wrong output mounted tells its user to do."""
    again = resume_command(spec)
    if spec.resume_from == "dataset":
        return (f"Kaggle may still be processing the checkpoint: push again in a few minutes with `{again}`, or "
                f"checkpoint again with `{checkpoint_command(spec)}`, or start over with `{again} --fresh`")
    return (f"Kaggle may still be saving that output: push again in a few minutes with `{again}`, or checkpoint "
            f"that output as a dataset with `{checkpoint_command(spec)}`, then push with `{again} --resume-from "
            f"dataset`, or start over (the earlier progress lost) with `{again} --fresh`")


def spec_options(spec: KernelSpec) -> str:
    """The CLI options that name this kernel again (for the next command's hint)."""
    runs = spec.blend or [spec.run_name]
    opts = [f"--task {spec.task}", *(f"--run {r}" for r in runs), f"--preset {spec.preset}"]
    if spec.task == "train":
        opts.append(f"--fold {spec.fold}")
    if spec.folds is not None:
        opts.append(f"--folds {','.join(map(str, spec.folds))}")
    if spec.train_kernels:
        opts.append(f"--train-kernels {spec.train_kernels}")
    if spec.shard:
        opts.append(f"--shard {spec.shard[0]}/{spec.shard[1]}")
    if spec.user:
        opts.append(f"--user {spec.user}")
    for flag, value in (("--encoder", spec.encoder), ("--encoder-weights", spec.encoder_weights),
                        ("--freeze-encoder", spec.freeze_encoder), ("--weights-dataset", spec.weights_dataset),
                        ("--filters", spec.filters)):
        if value is not None:
            opts.append(f"{flag} {value}")
    return " ".join(opts)


def error_line(ref: str, message: str) -> str:
    return (f"{ref} ended in ERROR: {message or '(Kaggle gave no failure message)'}; "
            f"its log: `kaggle kernels logs {ref}` or https://www.kaggle.com/code/{ref} (Logs)")


def resume_command(spec: KernelSpec) -> str:
    """The command that pushes the kernel again; the new version resumes from the earlier one's output."""
    opts = spec_options(spec) + (f" --epochs {spec.epochs}" if spec.epochs is not None else "")
    opts += f" --session-hours {spec.session_hours:g}" if spec.session_hours is not None else ""
    opts += f" --time-limit {spec.time_limit}" if spec.time_limit is not None else ""
    opts += f" --budget {spec.budget}" if spec.budget is not None else ""
    opts += " --resume-from dataset" if spec.resume_from == "dataset" else ""
    return f"python -m competition kernel push {opts}" + (f" --accelerator {spec.accelerator}"
                                                          if spec.accelerator != DEFAULT else "")
