"""The kernel side of Kaggle kernels: what the entry scripts `kernels/<task>/run.py` call on Kaggle, once the
embedded package is unpacked. Check the image (versions, GPUs), find the inputs under /kaggle/input in any
mount layout, restore an earlier version's output to resume, assemble a run from train kernels' outputs,
give the time-limited step its --time-limit, copy finished outputs to /kaggle/working and record how far
the kernel got (STATE_FILE, which the host side's `kernel status` reads). The host side, which builds,
pushes and follows kernels, is `competition.kaggle.kernels`.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

from .. import COMPETITION
from ..base import records
from ..base.errors import UserError
from ..base.fileio import copy_file
from ..base.records import Shape
from ..base.timelimit import parse_duration
from ..config import load_config
from ..data.kaggle_input import find_input
from ..inference.submission import differences, made_path
from ..models.encoders import encoder_spec
from ..runs import resume
from ..runs.folder import check_run_config, refiner_path
from .build import METADATA_FILE
from .machines import ACCELERATORS, TIME_MARGIN_SECONDS, session_hours as hours_of
from .state import STATE_FILE, describe_state, read_state, write_kernel_state

MIN_VERSIONS = {"python": (3, 10), "tensorflow": (2, 16), "keras": (3, 0)}
NEEDED_MODULES = ("numpy", "cv2", "PIL", "matplotlib", "tqdm", "tensorflow", "keras")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def gpu_mismatch(accelerator: str | None, names: list[str]) -> str | None:
    """Why the GPUs a kernel got (their names) are not what its --accelerator asked for (fewer, other or none);
    None when they are."""
    asked = ACCELERATORS.get((accelerator or "").strip().lower())
    want, model = (asked.gpus, asked.card) if asked else (0, "")
    if not want:
        return None
    got = ", ".join(names) if names else "no GPU"
    if len(names) < want or not all(model in n for n in names):
        return (f"this kernel asked for {want}x {model} (--accelerator {accelerator}) but got {got} (a phone not "
                f"verified, the week's GPU quota spent, or another machine given)")
    return None


def check_environment(accelerator: str | None = None, accept_machine: bool = False) -> dict[str, str]:
    """Print Python/TensorFlow/Keras versions and the GPUs; a missing module or old version is a UserError.

    With `accelerator` (what the kernel asked for), GPUs fewer or other than asked stop the kernel (a UserError)
    before it trains, unless `accept_machine` (push --accept-machine): then a warning."""
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"this kernel image lacks {', '.join(missing)}: choose the latest Python environment "
                        f"in the kernel's settings (the toolkit installs nothing: the kernel has no internet)")
    import keras
    import tensorflow as tf
    versions = {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    old = [f"{k} {v} (need >= {'.'.join(map(str, MIN_VERSIONS[k]))})" for k, v in versions.items()
           if _version(v) < MIN_VERSIONS[k]]
    if old:
        raise UserError(f"this kernel needs Keras 3 on TensorFlow >= 2.16; the image has {'; '.join(old)}: "
                        f"choose the latest environment in the kernel's settings")
    if keras.backend.backend() != "tensorflow":
        raise UserError(f"Keras runs on {keras.backend.backend()!r}; the toolkit needs KERAS_BACKEND=tensorflow")
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    print(f"GPUs: {len(gpus)}" + (f" ({', '.join(names)})" if names else
                                  " - running on CPU (slow); push with --accelerator t4x2 for Kaggle's GPUs"),
          flush=True)
    versions["gpus"] = str(len(gpus))
    mismatch = gpu_mismatch(accelerator, names)
    if mismatch and not accept_machine:
        raise UserError(f"{mismatch}: stopped before any training; check `python -m competition kernel quota` and "
                        f"your phone verification, then push again, or push with --accept-machine to run on what "
                        f"Kaggle gives")
    if mismatch:
        print(f"warning: {mismatch}; going on (--accept-machine)", file=sys.stderr, flush=True)
        print(f"warning: {mismatch}; going on (--accept-machine)", flush=True)  # also in the log's stdout
    return versions


def stop(working: Path, settings: dict, error: Exception) -> int:
    """A kernel that cannot start: the reason on stderr and in its output's STATE_FILE ("stopped"), where
    `kernel status` reads it; the exit code 2."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    write_kernel_state(working, "stopped", str(error), settings)
    return 2


def find_competition_input(input_root: Path) -> Path:
    """The competition's files under /kaggle/input in any mount layout (zips, read in place)."""
    found = find_input(COMPETITION, root=input_root)
    if found is None:
        raise UserError(f"{input_root}/{COMPETITION} not found (nor under competitions/, notebooks/<user>/ or "
                        f"datasets/<user>/): the kernel needs the competition as a source "
                        f"(competition_sources in {METADATA_FILE}) and its rules accepted at "
                        f"https://www.kaggle.com/competitions/{COMPETITION}/rules")
    return found


def find_kernel_input(input_root: Path, ref: str) -> Path:
    """The output of kernel user/slug, mounted at notebooks/<user>/<slug>/ (or flat <slug>/) under /kaggle/input."""
    user, _, slug = ref.rpartition("/")
    found = find_input(slug, user or None, input_root)
    if found is None:
        raise UserError(f"{input_root}/notebooks/{user or '<user>'}/{slug} not found: add {ref} to kernel_sources "
                        f"in {METADATA_FILE} "
                        f"and let it finish (COMPLETE) before this kernel runs")
    return found


def find_weights_file(input_root: Path, ref: str, encoder: str) -> Path:
    """The encoder's weights file in dataset user/slug under /kaggle/input: the file keras.applications
    names (e.g. vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5), else the dataset's only .h5/.keras file."""
    wanted = encoder_spec(encoder).weights_file
    user, _, slug = ref.rpartition("/")
    folder = find_input(slug, user or None, input_root)
    if folder is None:
        raise UserError(f"{input_root}/datasets/{user}/{slug} not found: add {ref} to dataset_sources in "
                        f"{METADATA_FILE} (kernel build --weights-dataset {ref} does) and check it is yours or public")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    exact = [p for p in files if p.name == wanted]
    weights = [p for p in files if p.name.endswith((".h5", ".keras"))]
    if exact or len(weights) == 1:
        found = (exact or weights)[0]
        print(f"encoder weights: {found}", flush=True)
        return found
    others = f" (it has {len(weights)} other weight files: keep only one, or name it so)" if weights else ""
    raise UserError(f"{folder}: no {wanted}{others}: upload that file (the ImageNet weights of {encoder}, which "
                    f"Keras keeps in ~/.keras/models/ once downloaded) to the dataset {ref}")


def assemble_run(sources: list[Path], run_dir: Path) -> list[int]:
    """A run folder (config.json + fold<k>/ links) from the train kernels' outputs; returns its folds."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    where: dict[int, Path] = {}
    for source in sources:
        fold_dirs = sorted(p.parent for p in source.rglob("fold*/model.keras") if p.parent.name[4:].isdigit())
        if not fold_dirs:
            raise UserError(f"{source}: no fold*/model.keras in this train kernel's output; did it finish "
                            f"(COMPLETE)? Its log says why not")
        for fold_dir in fold_dirs:
            fold = int(fold_dir.name[4:])
            if fold in where:
                raise UserError(f"fold {fold} is in both {where[fold]} and {fold_dir}; list each train kernel once")
            config = fold_dir.parent / "config.json"
            check_run_config(run_dir, load_config(config))  # the first writes config.json, the rest must agree
            (run_dir / fold_dir.name).symlink_to(fold_dir.resolve(), target_is_directory=True)
            where[fold] = fold_dir
            _take_folds_csv(fold_dir.parent / "folds.csv", run_dir / "folds.csv")
    print(f"run {run_dir}: folds {sorted(where)} from {', '.join(str(s) for s in sources)}", flush=True)
    return sorted(where)


def _take_folds_csv(theirs: Path, mine: Path) -> None:
    """The train kernels' split of the photos (what a refiner learning from a fold's training photos reads):
    copied from the first that has one; another that splits them differently is a one-line error."""
    if not theirs.is_file():
        return
    if not mine.is_file():
        shutil.copyfile(theirs, mine)
    elif mine.read_bytes() != theirs.read_bytes():
        raise UserError(f"{theirs} differs from the folds.csv of the train kernel gathered before it: their folds "
                        f"split the photos differently (another k, seed or data); gather kernels of one run")


def refine_for_score(run_dir: Path, fold: int) -> list[str]:
    """The --refine a train kernel scores its one fold with. A run refined by the net (cpu) that learns from the
    fold's own training photos has the fold's refiner: `train` trained it right after the fold (stage.py; minutes
    on a GPU). One learning from held-out predictions cannot have one yet (the other folds are other kernels'), nor
    can a fold whose refiner failed: those score with the guided filter."""
    cfg = load_config(run_dir / "config.json")
    if cfg.refine != "net" or refiner_path(run_dir, fold).is_file():
        return []
    why = "its refiner failed (above)" if cfg.refiner_from == "training" else "its refiner needs the other folds"
    print(f"scoring this fold with the guided filter, not the refiner net: {why}", flush=True)
    return ["--refine", "guided"]


def copy_outputs(src: Path, working: Path) -> list[Path]:
    """Copy a run folder's finished files (not backups, partial or temporary files) into /kaggle/working."""
    copied = []
    if not src.exists():
        return copied
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (not path.is_file() or resume.is_backup(rel) or any(part.startswith(".") for part in rel.parts)
                or path.name.endswith((".part", ".part.json"))):
            continue
        copied.append(copy_file(path, working / rel))
    return copied


def resume_source(settings: dict) -> str:
    """What a resuming kernel restores from: its checkpoint dataset (push --resume-from dataset), else its own slug."""
    return settings.get("dataset") or settings["kernel"]


def _unzip(archive: Path, dest: Path) -> None:
    """A folder of a checkpoint dataset that Kaggle left archived (`kaggle datasets create --dir-mode zip`)."""
    with zipfile.ZipFile(archive) as zf:
        for name in (n for n in zf.namelist() if not n.endswith("/")):
            target = dest / name
            if dest.resolve() not in target.resolve().parents:
                raise UserError(f"{archive}: member {name!r} points outside its folder; make the checkpoint again")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.unzip")
            tmp.write_bytes(zf.read(name))
            tmp.replace(target)


def restore_run(input_root: Path, ref: str, dests: list[Path]) -> Path | None:
    """Copy the output of this kernel's earlier version (mounted as its own source, or as the checkpoint dataset
    `ref`) into each of `dests` (the working run folder, /kaggle/working), so training or prediction continues
    where it stopped. A dataset's folder that Kaggle left as <folder>.zip is unpacked."""
    user, _, slug = ref.rpartition("/")
    src = find_input(slug, user or None, input_root)
    if src is None:
        print(f"no earlier output of {ref} under {input_root}: starting from the beginning", flush=True)
        return None
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and not p.name.endswith(".log") and p.name != STATE_FILE
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    archived = [p for p in files if p.parent == src and p.suffix == ".zip" and not (src / p.stem).is_dir()]
    for dest in dests:
        for path in files:
            if path in archived:
                _unzip(path, dest / path.stem)
            else:
                copy_file(path, dest / path.relative_to(src))
    print(f"resuming from the earlier version's output {src} ({len(files)} file(s))", flush=True)
    return src


def discard_made_otherwise(written: Path, tta: str, refine: str | None, folds: list[int] | None) -> list[Path]:
    """Drop an earlier version's restored submission, finished or partial, that was made with other settings than
    this version asks for (pushed again with another --refine, --tta or --folds under the same slug), so this
    version predicts what it was built for instead of shipping the old file or stopping at the partial one."""
    part, part_record = written.with_name(written.name + ".part"), written.with_name(written.name + ".part.json")
    dropped = []
    for made, files in ((made_path(written), [written, made_path(written)]), (part_record, [part, part_record])):
        if not made.is_file():
            continue
        record = records.load(made, Shape("a submission's record"), "it was restored from the earlier version: "
                                                                    "push again with --fresh to predict from the start")
        differs = differences(record.get("meta", record), tta, refine, folds)
        if differs:
            print(f"the earlier version's {files[0].name} was made with {', '.join(differs)}: predicting again "
                  f"as this version asks", flush=True)
            for path in files:
                path.unlink(missing_ok=True)
                dropped.append(path)
    return dropped


def time_limit(task: str, started: float, now: float | None = None, session_hours: float | None = None,
               cap: str | None = None) -> str:
    """The --time-limit a kernel passes: the session's length (Kaggle's 12 hours, or --session-hours) less a
    margin for what follows, less the time the kernel has already used since `started` (time.monotonic()); at
    most `cap` (kernel push --time-limit: a trial stopped early on purpose). The step itself stops before an
    epoch or chunk as long as the slowest measured would cross it."""
    used = (time.monotonic() if now is None else now) - started
    session = hours_of(session_hours) * 3600 - TIME_MARGIN_SECONDS[task] - used
    return f"{max(1, int(min(session, parse_duration(cap)) if cap else session))}s"


def _mounted_state(input_root: Path, ref: str) -> tuple[Path | None, dict | None]:
    """Where source user/slug is mounted under /kaggle/input, and the STATE_FILE it holds (None, None: nothing)."""
    user, _, slug = ref.rpartition("/")
    src = find_input(slug, user or None, input_root)
    found = src is not None and (src / STATE_FILE).is_file()
    return src, read_state(src / STATE_FILE, "push again with --fresh to start over") if found else None


def check_resume(input_root: Path, settings: dict) -> bool:
    """Whether this version resumes from its own earlier output (or its checkpoint dataset); a UserError, before any
    GPU time is spent, when the host knows an earlier push left output (settings["expect"]) and Kaggle mounted
    nothing or an older one. From a checkpoint dataset (settings["dataset"]) only the very state expected will do.

    Which version's output a kernel mounts as its own source is not documented by Kaggle: this checks it."""
    ref = settings.get("kernel")
    if not ref:
        return False
    if settings.get("fresh"):
        print(f"resume check: --fresh: not resuming from any earlier output of {ref}; starting over", flush=True)
        return False
    dataset = settings.get("dataset")
    src, state = _mounted_state(input_root, dataset or ref)
    expect, push = settings.get("expect"), settings.get("push")
    found = describe_state(state) + (f" at {src}" if src is not None else f" under {input_root}")
    other = state is not None and any(state.get(k) not in (None, settings.get(k2)) for k, k2 in
                                      (("run", "name"), ("fold", "fold"), ("kernel", "kernel")))
    older = expect is not None and (state is None or (state.get("push") or 0) < expect["push"])
    unlike = dataset is not None and (state is None or state.get("push") != (expect or {}).get("push")
                                      or (state.get("progress") or {}) != (expect or {}).get("progress", {}))
    if older or other or unlike:
        what = ("another run's output" if other else "nothing" if state is None else "an older version" if older
                else "another version")
        where = f"the checkpoint {dataset} holding " if dataset else "the output of "
        raise UserError(f"resume check of {ref} push {push}: expected {where}{describe_state(expect)}, found "
                        f"{found}: Kaggle mounted {what}; stopped before any training; "
                        f"{settings.get('fix') or 'push again with --fresh to start over'}")
    print(f"resume check of {ref} push {push}: found {found}" + (f" (checkpoint {dataset})" if dataset else "") +
          (f", as expected ({describe_state(expect)})" if expect else " (no earlier output known)"), flush=True)
    return True
