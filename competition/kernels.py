"""Kaggle kernels: self-contained push folders that train a fold or predict the test set on Kaggle's GPUs.

The host side (`build`, `push`, `status`, `output`), run by `python -m competition kernel`: it fills the
templates in `kernels/<task>/` into `kernels/build/<slug>/` (kernel-metadata.json + one entry script that
carries this package as an embedded zip) and talks to Kaggle through `kaggle_api`. The kernel side, which
those entry scripts call on Kaggle, is `competition.on_kaggle`.
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import COMPETITION, __version__
from .data.folds import check_fold
from .errors import UserError
from .fileio import read_json, write_json, write_text
from .on_kaggle import METADATA_FILE, STATE_FILE
from .progress import say

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = PACKAGE_DIR.parent / "kernels"
TASKS = ("train", "predict")
CODE_FILE = "run.py"
# --accelerator choice -> the machine shape Kaggle is asked for (None: no accelerator, CPU only).
ACCELERATORS: dict[str, str | None] = {"t4x2": "NvidiaTeslaT4", "p100": "NvidiaTeslaT4", "l4": "NvidiaL4",
                                       "none": None}
RETIRED = {"p100": "the P100 is retired on Kaggle (sessions asking for NvidiaTeslaP100 run on the default GPU, "
                   "NvidiaTeslaT4, instead): this kernel asks for 2x T4",
           "l4": "the L4 (NvidiaL4) may not be open for this competition: Kaggle opens some machine shapes to some "
                 "competitions only, and may then run the kernel on another machine without saying so; the "
                 "kernel's first lines print the GPUs it got (t4x2 is always open)"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same package gives the same bytes


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: train fold `fold` of run `name`, or predict the test set (or a shard) from its folds."""

    task: str = "train"
    fold: int = 0
    folds: list[int] | None = None        # predict: folds to ensemble (default: every fold of the preset)
    preset: str = "unet"
    name: str | None = None               # run name (default: the preset)
    user: str | None = None               # Kaggle user (default: from the kaggle config)
    accelerator: str = "t4x2"
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

    @property
    def run_name(self) -> str:
        return self.name or self.preset

    @property
    def trial(self) -> bool:
        """A train kernel with --epochs: a smoke run, under its own slug so it never replaces the real fold's."""
        return self.task == "train" and self.epochs is not None


# --- names ----------------------------------------------------------------------------------------
def slugify(text: str) -> str:
    """The slug Kaggle derives from a title: lower case, every run of other characters one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def train_title(name: str, fold: int) -> str:
    return f"carvana {name} fold {fold}"


def title(spec: KernelSpec) -> str:
    """The kernel's title; its slug is the kernel's id."""
    if spec.task == "train":
        return train_title(spec.run_name, spec.fold) + (f" trial {spec.epochs} epochs" if spec.trial else "")
    shard = f" shard {spec.shard[0]} of {spec.shard[1]}" if spec.shard else ""
    return f"carvana {spec.run_name} predict{shard}"


def kernel_slug(spec: KernelSpec) -> str:
    return slugify(title(spec))


def kernel_ref(spec: KernelSpec, user: str) -> str:
    """user/slug, as Kaggle names the kernel."""
    return f"{user}/{kernel_slug(spec)}"


def preset_folds(preset_name: str) -> int:
    """Number of folds (k) of a preset; an unknown preset is a UserError listing the known ones."""
    from .config import preset
    return preset(preset_name).k


def predict_folds(spec: KernelSpec) -> list[int] | None:
    """Folds a predict kernel ensembles: --folds, else every fold of the preset (None: all it finds)."""
    if spec.folds is not None:
        return list(spec.folds)
    return None if spec.train_kernels else list(range(preset_folds(spec.preset)))


def blend_members(spec: KernelSpec, user: str) -> list[dict]:
    """A blending predict kernel's runs: name, folds (@FOLDS, else --folds, else the preset's), weight, kernels."""
    from .inference.ensemble import parse_member
    members = []
    for text in spec.blend or []:
        m = parse_member(text)
        name = Path(m.run).name
        folds = list(m.folds or spec.folds or range(preset_folds(spec.preset)))
        members.append({"name": name, "folds": folds, "weight": m.weight,
                        "train_kernels": [f"{user}/{slugify(train_title(name, k))}" for k in folds]})
    return members


def blend_threshold(spec: KernelSpec) -> float | None:
    """The threshold `score --tune-threshold` saved here for this blend (runs/blends/<name>/blend.json), if any."""
    from .inference.ensemble import blend_dir, member_identity, parse_member, saved_threshold
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


def machine_shape(accelerator: str) -> str | None:
    """Kaggle's machine shape for an --accelerator choice; an unknown one is a one-line UserError."""
    key = accelerator.strip().lower()
    if key not in ACCELERATORS:
        raise UserError(f"unknown accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)} "
                        f"(t4x2: 2x NVIDIA T4, Kaggle's default GPU; p100: retired, runs on T4; none: CPU only)")
    return ACCELERATORS[key]


def warn_accelerator(accelerator: str) -> None:
    """A warning on stderr when the accelerator asked for is retired."""
    note = RETIRED.get(accelerator.strip().lower())
    if note:
        print(f"warning: {note}", file=sys.stderr, flush=True)


def check_spec(spec: KernelSpec) -> None:
    """One-line UserErrors for a kernel that cannot work, before anything is written or sent."""
    if spec.task not in TASKS:
        raise UserError(f"unknown kernel task {spec.task!r}: choose one of {', '.join(TASKS)}")
    machine_shape(spec.accelerator)
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
    if spec.epochs is not None and spec.epochs < 1:
        raise UserError(f"--epochs {spec.epochs}: must be at least 1")
    if spec.filters is not None and (spec.filters < 1 or spec.task != "train"):
        raise UserError(f"--filters {spec.filters}: a positive number, for train kernels")
    check_encoder_options(spec)
    if spec.refine is not None:
        from .config import check_refine
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
    from .config import preset
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
        from .kaggle_api import credentials_help, username
        user = username()
        if not user:
            raise UserError(f"no Kaggle user name for the kernel's id: pass --user NAME (make: USER_ARG='--user NAME') "
                            f"or set up the kaggle credentials: {credentials_help()}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", user):
        raise UserError(f"--user {user!r} is not a Kaggle user name (letters, digits, '-' and '_')")
    return user


# --- building the push folder ---------------------------------------------------------------------
def template_metadata(task: str) -> dict:
    """The committed kernels/<task>/kernel-metadata.json (its placeholders are replaced by `metadata`)."""
    return read_json(TEMPLATES / task / METADATA_FILE)


def metadata(spec: KernelSpec, user: str) -> dict:
    """The filled-in kernel-metadata.json: the template with the id, title, accelerator and sources."""
    meta = template_metadata(spec.task)
    shape = machine_shape(spec.accelerator)
    meta.update(id=kernel_ref(spec, user), title=title(spec), code_file=CODE_FILE, enable_gpu=shape is not None)
    if shape is None:
        meta.pop("machine_shape", None)
    else:
        meta["machine_shape"] = shape  # read by a hand-run `kaggle kernels push` too (without it: P100)
    # its own slug last: a re-pushed version mounts the earlier version's output and resumes from it
    meta["kernel_sources"] = (train_refs(spec, user) if spec.task == "predict" else []) + [kernel_ref(spec, user)]
    meta["enable_internet"] = needs_internet(spec)  # on only to fetch ImageNet weights
    if spec.weights_dataset:
        meta["dataset_sources"] = [*meta.get("dataset_sources", []), spec.weights_dataset]
    return meta


def kernel_settings(spec: KernelSpec, user: str) -> dict:
    """The SETTINGS dict the entry script runs with."""
    common = {"task": spec.task, "name": spec.run_name, "preset": spec.preset, "toolkit": __version__,
              "kernel": kernel_ref(spec, user), "accelerator": spec.accelerator.strip().lower()}
    if spec.task == "train":
        options = {"encoder": spec.encoder, "encoder_weights": spec.encoder_weights,
                   "freeze_encoder": spec.freeze_encoder, "weights_dataset": spec.weights_dataset,
                   "filters": spec.filters}
        return {**common, "fold": spec.fold, "epochs": spec.epochs, "score": spec.score,
                **{k: v for k, v in options.items() if v is not None}}
    if spec.blend:  # each run gathered apart, then every one passed to predict with its folds and weight
        return {**common, "blend": blend_members(spec, user), "threshold": blend_threshold(spec),
                "train_kernels": train_refs(spec, user), "folds": None, "tta": spec.tta,
                "shard": list(spec.shard) if spec.shard else None, "refine": spec.refine}
    return {**common, "train_kernels": train_refs(spec, user), "folds": predict_folds(spec), "tta": spec.tta,
            "shard": list(spec.shard) if spec.shard else None, "refine": spec.refine}


def package_zip(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The `competition` package's .py files as a deterministic zip (same sources, same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package_dir.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}", _ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def _fill_line(text: str, name: str, value: str) -> str:
    """Replace the template's one line `NAME = ...` by `NAME = value`."""
    pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
    if len(pattern.findall(text)) != 1:
        raise RuntimeError(f"the entry-script template needs exactly one line starting '{name} = '")
    return pattern.sub(lambda _: f"{name} = {value}", text)


def entry_script(spec: KernelSpec, user: str, package: bytes | None = None) -> str:
    """kernels/<task>/run.py with SETTINGS and the embedded package filled in."""
    text = (TEMPLATES / spec.task / CODE_FILE).read_text()
    settings = repr(kernel_settings(spec, user))  # a Python literal: str, int, None, lists
    encoded = base64.b64encode(package if package is not None else package_zip()).decode("ascii")
    wrapped = "\n".join(encoded[i:i + 100] for i in range(0, len(encoded), 100))
    text = _fill_line(text, "SETTINGS", settings)
    return _fill_line(text, "PACKAGE_ZIP", f'"""\n{wrapped}\n"""')


def _write_folder(spec: KernelSpec, user: str, out_root: Path) -> Path:
    folder = out_root / kernel_slug(spec)
    write_json(folder / METADATA_FILE, metadata(spec, user))
    write_text(folder / CODE_FILE, entry_script(spec, user))
    return folder


def build(spec: KernelSpec, out_root: Path = Path("kernels/build")) -> Path:
    """Write kernels/build/<slug>/ (kernel-metadata.json + run.py); returns the folder."""
    check_spec(spec)
    user = resolve_user(spec.user)
    warn_accelerator(spec.accelerator)
    folder = _write_folder(spec, user, out_root)
    size_kb = (folder / CODE_FILE).stat().st_size // 1024
    say(f"wrote {folder}/ ({METADATA_FILE}, {CODE_FILE} with the toolkit embedded, {size_kb} KB) for "
        f"{kernel_ref(spec, user)}; push it with `python -m competition kernel push` and the same options")
    return folder


# --- talking to Kaggle ----------------------------------------------------------------------------
def _kaggle(fn: Callable[..., Any], *args: Any, what: str, retry: bool = True, **kwargs: Any) -> Any:
    """kaggle_api.call, plus the package's own ValueErrors (metadata checks, denied kernels) as one line."""
    from .kaggle_api import call
    try:
        return call(fn, *args, what=what, retry=retry, **kwargs)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"Kaggle said no while {what}: {' '.join(str(e).split())}") from e


def push(spec: KernelSpec, out_root: Path = Path("kernels/build")) -> str:
    """Build, then `kernels_push` with the accelerator: the kernel starts running on Kaggle; returns its URL."""
    from .kaggle_api import get_api
    check_spec(spec)
    user = resolve_user(spec.user)
    warn_accelerator(spec.accelerator)
    folder = _write_folder(spec, user, out_root)
    ref = kernel_ref(spec, user)
    api = get_api()
    # not retried: a push that failed after reaching Kaggle may already have started a run
    response = _kaggle(api.kernels_push, str(folder), None, machine_shape(spec.accelerator),
                       what=f"pushing {folder} as {ref}", retry=False)
    if response.error:
        raise UserError(f"Kaggle refused the push of {ref}: {' '.join(response.error.split())}")
    for kind, bad, fix in (
            ("competition", response.invalid_competition_sources,
             f"accept the rules at https://www.kaggle.com/competitions/{COMPETITION}/rules"),
            # its own slug is no source yet at the first push: nothing to resume from, as intended
            ("kernel", [b for b in response.invalid_kernel_sources or [] if b.strip("/") != ref],
             "push the train kernels first and let them finish"),
            ("dataset", response.invalid_dataset_sources, "check the dataset slugs")):
        if bad:
            print(f"warning: Kaggle did not attach the {kind} source(s) {', '.join(bad)} to {ref}: {fix}; "
                  f"then push again", file=sys.stderr, flush=True)
    url = response.url or f"https://www.kaggle.com/code/{ref}"
    version = f" version {response.version_number}" if response.version_number else ""
    say(f"pushed {ref}{version} ({spec.accelerator}): {url}; follow it with "
        f"`python -m competition kernel status {_options(spec)}`")
    return url


def _options(spec: KernelSpec) -> str:
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


def status_name(status: Any) -> str:
    """QUEUED | RUNNING | COMPLETE | ERROR | CANCEL_REQUESTED | ...: the enum's name."""
    return getattr(status, "name", None) or str(status).rsplit(".", 1)[-1].upper()


def _status(api: Any, ref: str) -> tuple[str, str]:
    response = _kaggle(api.kernels_status, ref, what=f"asking Kaggle for the status of {ref}")
    return status_name(response.status), " ".join((response.failure_message or "").split())


def _error_line(ref: str, message: str) -> str:
    return (f"{ref} ended in ERROR: {message or '(Kaggle gave no failure message)'}; "
            f"its log: `kaggle kernels logs {ref}` or https://www.kaggle.com/code/{ref} (Logs)")


def resume_command(spec: KernelSpec) -> str:
    """The command that pushes the kernel again; the new version resumes from the earlier one's output."""
    opts = _options(spec) + (f" --epochs {spec.epochs}" if spec.epochs is not None else "")
    return f"python -m competition kernel push {opts}" + (f" --accelerator {spec.accelerator}"
                                                          if spec.accelerator != "t4x2" else "")


def _kernel_state(api: Any, ref: str) -> dict | None:
    """The kernel's own record of how far it got (STATE_FILE in its output), or None when it has none."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        _kaggle(api.kernels_output, ref, tmp, file_pattern=rf"^{re.escape(STATE_FILE)}$",
                what=f"reading {STATE_FILE} of {ref}")
        path = Path(tmp) / STATE_FILE
        return read_json(path) if path.is_file() else None


def status(spec: KernelSpec) -> str:
    """Print the kernel's status; ERROR is a one-line UserError carrying Kaggle's failure message.

    A kernel that stopped at its time limit, or was stopped or failed before finishing, says so with the
    exact command that resumes it."""
    from .kaggle_api import get_api
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    api = get_api()
    state, message = _status(api, ref)
    resume = f"resume it with `{resume_command(spec)}` (the new version continues from this one's output)"
    if state == "ERROR":
        raise UserError(f"{_error_line(ref, message)}; {resume}")
    if state.startswith("CANCEL"):
        raise UserError(f"{ref} was stopped ({state}) before it finished; {resume}")
    if state == "COMPLETE":
        record = _kernel_state(api, ref) or {}
        if record.get("state") == "time-limited":
            say(f"{ref}: COMPLETE but NOT FINISHED - it stopped at its time limit ({record.get('detail', '')}); "
                f"{resume}")
            return "TIME_LIMITED"
    hint = {"COMPLETE": f"fetch its outputs with `python -m competition kernel output {_options(spec)}`",
            "QUEUED": "waiting for a machine; ask again later",
            "RUNNING": "ask again later"}.get(state, message)
    say(f"{ref}: {state}" + (f" - {hint}" if hint else ""))
    return state


def default_dest(spec: KernelSpec) -> Path:
    """runs/<name>/ for a train kernel (its output is the run folder), submissions/ for predict."""
    return Path("runs") / spec.run_name if spec.task == "train" else Path("submissions")


def output(spec: KernelSpec, dest: Path | None = None) -> list[Path]:
    """Download a COMPLETE kernel's outputs into runs/<name>/ or submissions/; each file appears whole."""
    from .kaggle_api import get_api
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    dest = dest or default_dest(spec)
    api = get_api()
    state, message = _status(api, ref)
    if state == "ERROR":
        raise UserError(_error_line(ref, message))
    if state != "COMPLETE":
        raise UserError(f"{ref} is {state}, not COMPLETE: nothing to download yet; "
                        f"`python -m competition kernel status {_options(spec)}` tells when it is done")
    staging = dest / f".kernel-output-{kernel_slug(spec)}"  # resumable; files move into dest when all arrived
    _kaggle(api.kernels_output, ref, str(staging), what=f"downloading the output of {ref}")
    if spec.task == "train" and (staging / "config.json").is_file():
        from .config import load_config
        from .runs import check_run_config
        check_run_config(dest, load_config(staging / "config.json"))
    if spec.task == "predict":  # the refiner a predict kernel trained (--refine net) is its own resume state;
        shutil.rmtree(staging / "refiner", ignore_errors=True)  # shards' would overwrite each other here
    moved = _move_tree(staging, dest)
    shutil.rmtree(staging, ignore_errors=True)
    if spec.task == "train":
        nxt = f"predict with `python -m competition predict --run {dest} ...` or push a predict kernel"
    else:
        subs = [p for p in moved if p.name.endswith(".csv.gz") or p.name.endswith(".csv")]
        nxt = ("merge the shards with `python -m competition merge` then submit" if spec.shard
               else f"submit with `make submit OUT={subs[0]} DATA=<data root>`" if subs else "no submission file in it")
    say(f"downloaded {len(moved)} file(s) of {ref} into {dest}/; {nxt}")
    return moved


def _move_tree(src: Path, dest: Path) -> list[Path]:
    """Move every downloaded file from src into dest (same relative paths) by atomic renames."""
    moved = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        if path.name.endswith(".kaggle-partial"):
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved
