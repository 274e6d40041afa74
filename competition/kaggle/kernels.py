"""Kaggle kernels, the host side: self-contained push folders that train a fold or predict the test set on
Kaggle's GPUs, pushed, followed and fetched.

`build`, `push`, `status`, `output`, run by `python -m competition kernel`: they fill the templates in
`kernels/<task>/` into `kernels/build/<slug>/` (kernel-metadata.json + one entry script that carries this package
as an embedded zip), talk to Kaggle through `kaggle_api` and record every push in runs/<run>/kernels.json
(`kernel_records`). What a kernel is (spec, title, checks) is `competition.kaggle.spec`; pushing every fold two
at a time is `competition.kaggle.queue`. The kernel side, which the entry scripts call on Kaggle, is
`competition.kaggle.on_kaggle`.
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from .. import COMPETITION, __version__
from . import records as kernel_records
from ..base.errors import UserError
from ..base.fileio import read_json, write_json, write_text
from .spec import ACCELERATORS, CODE_FILE, PACKAGE_DIR, TASKS, TEMPLATES, KernelSpec, blend_members, blend_threshold, check_spec, kernel_ref, kernel_slug, machine_shape, needs_internet, predict_folds, resolve_user, slugify, title, train_refs, warn_accelerator
from .on_kaggle import METADATA_FILE, SESSION_HOURS, STATE_FILE, describe_state
from ..base.console import say

__all__ = ["ACCELERATORS", "METADATA_FILE", "TASKS", "KernelSpec", "build", "kernel_slug", "output", "push",
           "slugify", "status", "title", "train_refs"]
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same package gives the same bytes


# --- building the push folder ---------------------------------------------------------------------
def template_metadata(task: str) -> dict:
    """The committed kernels/<task>/kernel-metadata.json (its placeholders are replaced by `metadata`)."""
    return read_json(TEMPLATES / task / METADATA_FILE)


def metadata(spec: KernelSpec, user: str, checkpoint: str | None = None) -> dict:
    """The filled-in kernel-metadata.json: the template with the id, title, accelerator and sources (with
    `checkpoint`, the dataset `kernel checkpoint` made, instead of the kernel's own slug)."""
    meta = template_metadata(spec.task)
    shape = machine_shape(spec.accelerator)
    meta.update(id=kernel_ref(spec, user), title=title(spec), code_file=CODE_FILE, enable_gpu=shape is not None)
    if shape is None:
        meta.pop("machine_shape", None)
    else:
        meta["machine_shape"] = shape  # read by a hand-run `kaggle kernels push` too (without it: Kaggle's P100)
    # its own slug last: a re-pushed version mounts the earlier version's output and resumes from it
    own = [] if checkpoint else [kernel_ref(spec, user)]
    meta["kernel_sources"] = (train_refs(spec, user) if spec.task == "predict" else []) + own
    meta["enable_internet"] = needs_internet(spec)  # on only to fetch ImageNet weights
    meta["dataset_sources"] = [*meta.get("dataset_sources", []), *(d for d in (spec.weights_dataset, checkpoint) if d)]
    return meta


def kernel_settings(spec: KernelSpec, user: str, resume: dict | None = None) -> dict:
    """The SETTINGS dict the entry script runs with (resume: push, expect, fresh and fix, from `push`)."""
    common = {"task": spec.task, "name": spec.run_name, "preset": spec.preset, "toolkit": __version__,
              "kernel": kernel_ref(spec, user), "accelerator": spec.accelerator.strip().lower(),
              "session_hours": session_hours(spec), **(resume or {"fresh": spec.fresh})}
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


def entry_script(spec: KernelSpec, user: str, package: bytes | None = None, resume: dict | None = None) -> str:
    """kernels/<task>/run.py with SETTINGS and the embedded package filled in."""
    text = (TEMPLATES / spec.task / CODE_FILE).read_text()
    settings = repr(kernel_settings(spec, user, resume))  # a Python literal: str, int, None, lists
    encoded = base64.b64encode(package if package is not None else package_zip()).decode("ascii")
    wrapped = "\n".join(encoded[i:i + 100] for i in range(0, len(encoded), 100))
    text = _fill_line(text, "SETTINGS", settings)
    return _fill_line(text, "PACKAGE_ZIP", f'"""\n{wrapped}\n"""')


def _write_folder(spec: KernelSpec, user: str, out_root: Path, resume: dict | None = None) -> Path:
    folder = out_root / kernel_slug(spec)
    meta = metadata(spec, user, (resume or {}).get("dataset"))
    script = entry_script(spec, user, resume=resume)  # both made before either is written
    write_json(folder / METADATA_FILE, meta)
    write_text(folder / CODE_FILE, script)
    return folder


def session_hours(spec: KernelSpec) -> float:
    """--session-hours, else KAGGLE_SESSION_HOURS, else Kaggle's 12 hours; a bad value is a one-line UserError."""
    if spec.session_hours is not None:
        return float(spec.session_hours)
    text = os.environ.get("KAGGLE_SESSION_HOURS", "").strip()
    try:
        hours = float(text) if text else SESSION_HOURS
    except ValueError:
        raise UserError(f"KAGGLE_SESSION_HOURS={text!r}: expected hours, e.g. 12 or 9") from None
    if not 0.5 <= hours <= 24:
        raise UserError(f"KAGGLE_SESSION_HOURS={text}: between 0.5 and 24 (Kaggle's GPU sessions: 12)")
    return hours


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
def kaggle_call(fn: Callable[..., Any], *args: Any, what: str, retry: bool = True, **kwargs: Any) -> Any:
    """kaggle_api.call, plus the package's own ValueErrors (metadata checks, denied kernels) as one line."""
    from .api import call
    try:
        return call(fn, *args, what=what, retry=retry, **kwargs)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"Kaggle said no while {what}: {' '.join(str(e).split())}") from e


def push(spec: KernelSpec, out_root: Path = Path("kernels/build"), runs: Path = Path("runs")) -> str:
    """Build, then `kernels_push` with the accelerator: the kernel starts running on Kaggle; returns its URL.

    The push is recorded in runs/<run>/kernels.json, and the new version is told which earlier output it must
    find mounted (the latest kernel-state.json known), so that it stops at once instead of starting over."""
    from .api import get_api
    check_spec(spec)
    user = resolve_user(spec.user)
    warn_accelerator(spec.accelerator)
    ref, slug = kernel_ref(spec, user), kernel_slug(spec)
    api = get_api()
    records = kernel_records.load(spec.run_name, runs)
    number = kernel_records.next_push(records, slug)
    if number > 1:
        _refuse_while_running(api, ref, spec)
    if not spec.fresh:
        kernel_records.note_state(records, slug, _kernel_state(api, ref, missing_ok=True))
    expect = None if spec.fresh else kernel_records.expected_state(records, slug, spec.resume_from)
    dataset = None if spec.fresh or spec.resume_from == "self" else _checkpoint_dataset(api, records, slug, spec)
    resume = {"push": number, "expect": expect, "fresh": spec.fresh, "fix": fix_line(spec),
              **({"dataset": dataset} if dataset else {})}
    folder = _write_folder(spec, user, out_root, resume)
    # not retried: a push that failed after reaching Kaggle may already have started a run
    response = kaggle_call(api.kernels_push, str(folder), None, machine_shape(spec.accelerator),
                           what=f"pushing {folder} as {ref}", retry=False)
    if response.error:
        raise UserError(f"Kaggle refused the push of {ref}: {' '.join(response.error.split())}")
    _warn_sources(response, ref)
    kernel_records.note_push(records, slug, ref=ref, task=spec.task, fold=spec.fold if spec.task == "train" else None,
                             push=number, version=response.version_number, fresh=spec.fresh, expect=expect)
    kernel_records.save(spec.run_name, records, runs)
    url = response.url or f"https://www.kaggle.com/code/{ref}"
    version = f" version {response.version_number}" if response.version_number else ""
    resumes = ("starting over (--fresh)" if spec.fresh else f"must resume from {describe_state(expect)}" if expect
               else "no earlier output known: starts from the beginning") + (f" in {dataset}" if dataset else "")
    say(f"pushed {ref}{version} (push {number}, {spec.accelerator}; {resumes}): {url}; follow it with "
        f"`python -m competition kernel status {spec_options(spec)}`")
    return url


def _warn_sources(response: Any, ref: str) -> None:
    """A warning for each source Kaggle did not attach (its own slug is no source yet at the first push)."""
    for kind, bad, fix in (
            ("competition", response.invalid_competition_sources,
             f"accept the rules at https://www.kaggle.com/competitions/{COMPETITION}/rules"),
            ("kernel", [b for b in response.invalid_kernel_sources or [] if b.strip("/") != ref],
             "push the train kernels first and let them finish"),
            ("dataset", response.invalid_dataset_sources, "check the dataset slugs")):
        if bad:
            print(f"warning: Kaggle did not attach the {kind} source(s) {', '.join(bad)} to {ref}: {fix}; "
                  f"then push again", file=sys.stderr, flush=True)


def _refuse_while_running(api: Any, ref: str, spec: KernelSpec) -> None:
    """A version still QUEUED or RUNNING has not left its output: a new one now could not resume from it."""
    state, _ = session_status(api, ref)
    if state in ("QUEUED", "RUNNING"):
        raise UserError(f"{ref} is {state}: a new version now could not resume from its output; wait until it "
                        f"ends (`python -m competition kernel status {spec_options(spec)}`), then push again")


def _checkpoint_dataset(api: Any, records: dict, slug: str, spec: KernelSpec) -> str:
    """--resume-from dataset: the kernel's checkpoint dataset, once Kaggle has it ready (else a one-line error)."""
    made = kernel_records.checkpoint(records, slug)
    if not made:
        raise UserError(f"--resume-from dataset: runs/{spec.run_name}/kernels.json records no checkpoint of {slug}; "
                        f"make one with `{checkpoint_command(spec)}` once the kernel has ended, then push again")
    ready = kaggle_call(api.dataset_status, made["dataset"],
                        what=f"asking Kaggle for the status of {made['dataset']}")
    if str(ready).lower() != "ready":
        raise UserError(f"the checkpoint {made['dataset']} is {ready} on Kaggle, not ready: a kernel pushed now could "
                        f"mount an older version; push again in a few minutes")
    return made["dataset"]


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


def status_name(status: Any) -> str:
    """QUEUED | RUNNING | COMPLETE | ERROR | CANCEL_REQUESTED | ...: the enum's name."""
    return getattr(status, "name", None) or str(status).rsplit(".", 1)[-1].upper()


def session_status(api: Any, ref: str) -> tuple[str, str]:
    response = kaggle_call(api.kernels_status, ref, what=f"asking Kaggle for the status of {ref}")
    return status_name(response.status), " ".join((response.failure_message or "").split())


def error_line(ref: str, message: str) -> str:
    return (f"{ref} ended in ERROR: {message or '(Kaggle gave no failure message)'}; "
            f"its log: `kaggle kernels logs {ref}` or https://www.kaggle.com/code/{ref} (Logs)")


def resume_command(spec: KernelSpec) -> str:
    """The command that pushes the kernel again; the new version resumes from the earlier one's output."""
    opts = spec_options(spec) + (f" --epochs {spec.epochs}" if spec.epochs is not None else "")
    opts += f" --session-hours {spec.session_hours:g}" if spec.session_hours is not None else ""
    opts += " --resume-from dataset" if spec.resume_from == "dataset" else ""
    return f"python -m competition kernel push {opts}" + (f" --accelerator {spec.accelerator}"
                                                          if spec.accelerator != "t4x2" else "")


def _kernel_state(api: Any, ref: str, missing_ok: bool = False) -> dict | None:
    """The kernel's own record of how far it got (STATE_FILE in its output), or None when it has none
    (missing_ok: nor when Kaggle knows no such kernel yet)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        try:
            kaggle_call(api.kernels_output, ref, tmp, file_pattern=rf"^{re.escape(STATE_FILE)}$",
                        what=f"reading {STATE_FILE} of {ref}")
        except UserError as e:
            if missing_ok and str(e).startswith("not found on Kaggle"):
                return None
            raise
        path = Path(tmp) / STATE_FILE
        return read_json(path) if path.is_file() else None


def poll(api: Any, ref: str) -> tuple[str, str, dict | None]:
    """(state, message, kernel-state.json or None): Kaggle's state, TIME_LIMITED for a COMPLETE kernel that stopped
    at its time limit (its STATE_FILE says so), and ERROR's failure message."""
    state, message = session_status(api, ref)
    record = _kernel_state(api, ref) if state == "COMPLETE" else None
    if record and record.get("state") == "time-limited":
        return "TIME_LIMITED", record.get("detail", ""), record
    return state, message, record


def status(spec: KernelSpec, runs: Path = Path("runs")) -> str:
    """Print the kernel's status; ERROR is a one-line UserError carrying Kaggle's failure message.

    A kernel that stopped at its time limit, or was stopped or failed before finishing, says so with the
    exact command that resumes it. The state seen is recorded in runs/<run>/kernels.json."""
    from .api import get_api
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    api = get_api()
    state, message, record = poll(api, ref)
    records = kernel_records.load(spec.run_name, runs)
    if record and kernel_slug(spec) in records["kernels"]:
        kernel_records.note_state(records, kernel_slug(spec), record)
        kernel_records.save(spec.run_name, records, runs)
    resume = f"resume it with `{resume_command(spec)}` (the new version continues from this one's output)"
    if state == "ERROR":
        raise UserError(f"{error_line(ref, message)}; {resume}")
    if state.startswith("CANCEL"):
        raise UserError(f"{ref} was stopped ({state}) before it finished; {resume}")
    if state == "TIME_LIMITED":
        say(f"{ref}: COMPLETE but NOT FINISHED - it stopped at its time limit ({message}); {resume}")
        return state
    hint = {"COMPLETE": f"fetch its outputs with `python -m competition kernel output {spec_options(spec)}`",
            "QUEUED": "waiting for a machine; ask again later",
            "RUNNING": "ask again later"}.get(state, message)
    say(f"{ref}: {state}" + (f" - {hint}" if hint else ""))
    return state


def default_dest(spec: KernelSpec) -> Path:
    """runs/<name>/ for a train kernel (its output is the run folder), submissions/ for predict."""
    return Path("runs") / spec.run_name if spec.task == "train" else Path("submissions")


def output(spec: KernelSpec, dest: Path | None = None) -> list[Path]:
    """Download a COMPLETE kernel's outputs into runs/<name>/ or submissions/; each file appears whole."""
    from .api import get_api
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    dest = dest or default_dest(spec)
    api = get_api()
    state, message = session_status(api, ref)
    if state == "ERROR":
        raise UserError(error_line(ref, message))
    if state != "COMPLETE":
        raise UserError(f"{ref} is {state}, not COMPLETE: nothing to download yet; "
                        f"`python -m competition kernel status {spec_options(spec)}` tells when it is done")
    staging = dest / f".kernel-output-{kernel_slug(spec)}"  # resumable; files move into dest when all arrived
    kaggle_call(api.kernels_output, ref, str(staging), what=f"downloading the output of {ref}")
    if spec.task == "train" and (staging / "config.json").is_file():
        from ..config import load_config
        from ..runs.folder import check_run_config
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
