"""`kernel checkpoint`: a kernel's output versioned as a private Kaggle dataset, the resume that does not depend on
the kernel mounting its own earlier output (its self-source, whose version Kaggle does not document).

It downloads the output of an ended kernel (`kaggle kernels output`), checks it holds this run's and fold's
kernel-state.json and what resuming needs, and uploads it as the private dataset <user>/carvana-<run>-fold-<k>-
checkpoint (`kaggle datasets create` the first time, `kaggle datasets version` after). runs/<run>/kernels.json
records the dataset, its version count and the state it holds; `kernel push --resume-from dataset` then lists
the dataset in dataset_sources and tells the new version the exact state it must find there. Builds on
`competition.kaggle.kernels`.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import write_json
from ..runs import resume
from . import records as kernel_records
from .api import call, check_owner, get_api, session_status
from .kernels import sync_record
from .machines import ACTIVE
from .spec import (KernelSpec, check_spec, checkpoint_ref, checkpoint_title, error_line, kernel_ref, kernel_slug,
                   resolve_user, resume_command, spec_options)
from .state import STATE_FILE, describe_state, read_state

DATASET_METADATA = "dataset-metadata.json"
LICENSE = "CC0-1.0"  # the license `kaggle datasets init` writes; the dataset stays private


def dataset_metadata(spec: KernelSpec, user: str) -> dict:
    """dataset-metadata.json of the kernel's checkpoint: id, a title of at most 50 characters, one license."""
    return {"title": checkpoint_title(spec), "id": checkpoint_ref(spec, user), "licenses": [{"name": LICENSE}]}


def missing_to_resume(spec: KernelSpec, folder: Path) -> str | None:
    """What a downloaded output lacks to resume from (None: nothing): a train kernel's fold its resumable backup or,
    trained already, its train.json (runs/resume.py); a predict kernel anything written."""
    if spec.task == "train":
        return resume.missing_to_resume(folder / f"fold{spec.fold}")
    written = [p for p in folder.rglob("*") if p.is_file() and p.name != STATE_FILE and not p.name.endswith(".log")]
    return None if written else "a submission or its partial file"


def check_output(spec: KernelSpec, ref: str, folder: Path, state: str) -> dict:
    """The output's kernel-state.json, once it is this kernel's (run, task, fold) and holds what resuming needs."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise UserError(f"{ref} ({state}) left no {STATE_FILE} in its output: nothing to checkpoint, nothing created; "
                        f"its log: `kaggle kernels logs {ref}`")
    record = read_state(path, f"nothing created; start over with `{resume_command(spec)} --fresh`")
    want = {"run": spec.run_name, "task": spec.task, "kernel": ref,
            **({"fold": spec.fold} if spec.task == "train" else {})}
    wrong = [f"{k} {record.get(k)!r} (not {v!r})" for k, v in want.items() if record.get(k) not in (None, v)]
    if wrong:
        raise UserError(f"{ref}'s {STATE_FILE} is another kernel's: {', '.join(wrong)}; nothing created")
    lacks = missing_to_resume(spec, folder)
    if lacks:
        raise UserError(f"{ref} ({state}) left {describe_state(record)} but no {lacks} in its output: nothing to "
                        f"resume from, nothing created; start over with `{resume_command(spec)} --fresh`")
    return record


def _upload_folder(output: Path, dest: Path, meta: dict) -> Path:
    """The folder `kaggle datasets create/version` uploads: the output less its log, with dataset-metadata.json."""
    shutil.copytree(output, dest, ignore=shutil.ignore_patterns("*.log", ".*"))
    write_json(dest / DATASET_METADATA, meta)
    return dest


def _upload(api: Any, folder: Path, dataset: str, first: bool, note: str) -> None:
    """`datasets create` (private) the first time, else `datasets version`; folders go up as zips Kaggle unpacks."""
    if first:
        response = call(api.dataset_create_new, str(folder), public=False, quiet=True, dir_mode="zip",
                               what=f"creating the private dataset {dataset}", retry=False)
        if response.error and "already in use" in response.error:  # made before, its record lost: a new version
            first = False
    if not first:
        response = call(api.dataset_create_version, str(folder), note, quiet=True, dir_mode="zip",
                               what=f"versioning the dataset {dataset}", retry=False)
    if response.error:
        raise UserError(f"Kaggle refused the dataset {dataset}: {' '.join(str(response.error).split())}")


def checkpoint(spec: KernelSpec, runs: Path = Path("runs"), version: int | None = None) -> str:
    """Version the ended kernel's output (version: that version's, e.g. the last usable one `kernel status` names)
    as its private checkpoint dataset; returns the dataset's user/slug."""
    check_spec(spec)
    user = resolve_user(spec.user)
    ref, slug, dataset = kernel_ref(spec, user), kernel_slug(spec), checkpoint_ref(spec, user)
    source = f"{ref}/{version}" if version else ref
    records = kernel_records.load(spec.run_name, runs)
    api = get_api()
    check_owner(api, user, ref, "its checkpoint, a dataset,")
    if not sync_record(api, records, spec, ref, runs, note=False):  # its output is read below
        raise UserError(f"Kaggle knows no kernel {ref} of yours (it answers 403): check --run, --fold, --preset "
                        f"and --epochs (`python -m competition kernel status --run {spec.run_name}` lists its folds' "
                        f"kernels)")
    state, message = session_status(api, source)
    if state in ACTIVE:
        raise UserError(f"{source} is {state}: its output is not saved yet; checkpoint it after it ends "
                        f"(`python -m competition kernel status {spec_options(spec)}`)")
    runs.joinpath(spec.run_name).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".checkpoint-", dir=runs / spec.run_name) as tmp:  # beside the run
        output = Path(tmp) / "output"
        call(api.kernels_output, source, str(output), what=f"downloading the output of {source}")
        record = check_output(spec, ref, output, state)
        if state == "ERROR":
            say(f"note: {error_line(ref, message)}; its output holds {describe_state(record)}, which resumes: "
                f"checkpointing it")
        first = kernel_records.checkpoint(records, slug) is None
        folder = _upload_folder(output, Path(tmp) / "upload", dataset_metadata(spec, user))
        _upload(api, folder, dataset, first, f"{ref} {describe_state(record)}")
    versions = kernel_records.note_checkpoint(records, slug, dataset, record)
    kernel_records.save(spec.run_name, records, runs)
    again = resume_command(dataclasses.replace(spec, resume_from="dataset"))
    say(f"checkpointed {describe_state(record)} of {ref} as version {versions} of the private dataset {dataset}; "
        f"when `kaggle datasets status {dataset}` says ready, resume with `{again}`")
    return dataset
