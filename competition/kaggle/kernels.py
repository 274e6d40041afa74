"""Kaggle kernels, the host side: `build`, `push`, `status`, `output`, run by `python -m competition kernel`.

A kernel's push folder is kaggle/build.py's (its metadata and entry script, with this package embedded); what a
kernel is (spec, title, checks) is kaggle/spec.py's; the machines it asks for are kaggle/machines.py's; every
push is recorded in runs/<run>/kernels.json (kaggle/records.py); pushing every fold two at a time is
kaggle/queue.py. The kernel side, which the entry scripts call on Kaggle, is kaggle/on_kaggle.py.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .. import COMPETITION
from ..base.console import say
from ..base.errors import UserError
from ..config import load_config
from ..runs.folder import check_run_config
from . import records as kernel_records
from .api import call, get_api, kernel_state, session_status
from .build import METADATA_FILE, write_folder
from .machines import ACTIVE, accelerator, warn
from .spec import (CODE_FILE, KernelSpec, check_spec, checkpoint_command, error_line, fix_line, kernel_ref,
                   kernel_slug, resolve_user, resume_command, spec_options)
from .state import describe_state


def build(spec: KernelSpec, out_root: Path = Path("kernels/build")) -> Path:
    """Write kernels/build/<slug>/ (kernel-metadata.json + run.py); returns the folder."""
    check_spec(spec)
    user = resolve_user(spec.user)
    warn(spec.accelerator)
    folder = write_folder(spec, user, out_root)
    size_kb = (folder / CODE_FILE).stat().st_size // 1024
    say(f"wrote {folder}/ ({METADATA_FILE}, {CODE_FILE} with the toolkit embedded, {size_kb} KB) for "
        f"{kernel_ref(spec, user)}; push it with `python -m competition kernel push` and the same options")
    return folder


def push(spec: KernelSpec, out_root: Path = Path("kernels/build"), runs: Path = Path("runs")) -> str:
    """Build, then `kernels_push` with the accelerator: the kernel starts running on Kaggle; returns its URL.

    The push is recorded in runs/<run>/kernels.json, and the new version is told which earlier output it must
    find mounted (the latest kernel-state.json known), so that it stops at once instead of starting over."""
    check_spec(spec)
    user = resolve_user(spec.user)
    warn(spec.accelerator)
    ref, slug = kernel_ref(spec, user), kernel_slug(spec)
    api = get_api()
    records = kernel_records.load(spec.run_name, runs)
    number = kernel_records.next_push(records, slug)
    if number > 1:
        _refuse_while_running(api, ref, spec)
    if not spec.fresh:
        kernel_records.note_state(records, slug, kernel_state(api, ref, missing_ok=True))
    expect = None if spec.fresh else kernel_records.expected_state(records, slug, spec.resume_from)
    dataset = None if spec.fresh or spec.resume_from == "self" else _checkpoint_dataset(api, records, slug, spec)
    resume = {"push": number, "expect": expect, "fresh": spec.fresh, "fix": fix_line(spec),
              **({"dataset": dataset} if dataset else {})}
    folder = write_folder(spec, user, out_root, resume)
    # not retried: a push that failed after reaching Kaggle may already have started a run
    response = call(api.kernels_push, str(folder), None, accelerator(spec.accelerator).machine_shape,
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
    """A version not yet ended (machines.ACTIVE: queued, running, ...) has not left its output: a new one now could
    not resume from it."""
    state, _ = session_status(api, ref)
    if state in ACTIVE:
        raise UserError(f"{ref} is {state}: a new version now could not resume from its output; wait until it "
                        f"ends (`python -m competition kernel status {spec_options(spec)}`), then push again")


def _checkpoint_dataset(api: Any, records: dict, slug: str, spec: KernelSpec) -> str:
    """--resume-from dataset: the kernel's checkpoint dataset, once Kaggle has it ready (else a one-line error)."""
    made = kernel_records.checkpoint(records, slug)
    if not made:
        raise UserError(f"--resume-from dataset: runs/{spec.run_name}/kernels.json records no checkpoint of {slug}; "
                        f"make one with `{checkpoint_command(spec)}` once the kernel has ended, then push again")
    ready = call(api.dataset_status, made["dataset"],
                        what=f"asking Kaggle for the status of {made['dataset']}")
    if str(ready).lower() != "ready":
        raise UserError(f"the checkpoint {made['dataset']} is {ready} on Kaggle, not ready: a kernel pushed now could "
                        f"mount an older version; push again in a few minutes")
    return made["dataset"]


def poll(api: Any, ref: str) -> tuple[str, str, dict | None]:
    """(state, message, kernel-state.json or None): Kaggle's state, TIME_LIMITED for a COMPLETE kernel that stopped
    at its time limit (its STATE_FILE says so), and ERROR's failure message."""
    state, message = session_status(api, ref)
    record = kernel_state(api, ref) if state == "COMPLETE" else None
    if record and record.get("state") == "time-limited":
        return "TIME_LIMITED", record.get("detail", ""), record
    return state, message, record


def status(spec: KernelSpec, runs: Path = Path("runs")) -> str:
    """Print the kernel's status; ERROR is a one-line UserError carrying Kaggle's failure message.

    A kernel that stopped at its time limit, or was stopped or failed before finishing, says so with the
    exact command that resumes it. The state seen is recorded in runs/<run>/kernels.json."""
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
    call(api.kernels_output, ref, str(staging), what=f"downloading the output of {ref}")
    if spec.task == "train" and (staging / "config.json").is_file():
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
