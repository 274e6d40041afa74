"""Kaggle kernels, the host side: `build`, `push`, `status`, `output`, run by `python -m competition kernel`.

A kernel's push folder is kaggle/build.py's (its metadata and entry script, with this package embedded); what a
kernel is (spec, title, checks) is kaggle/spec.py's; the machines it asks for are kaggle/machines.py's; every
push is recorded in runs/<run>/kernels.json (kaggle/records.py); pushing every fold two at a time is
kaggle/queue.py. The kernel side, which the entry scripts call on Kaggle, is kaggle/on_kaggle.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
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
from .api import call, check_owner, get_api, kernel_state, known_status, log_lines, quota, session_status
from .build import METADATA_FILE, write_folder
from .machines import ACTIVE, MAX_SESSIONS, accelerator, warn
from .spec import (CODE_FILE, KernelSpec, budget_words, check_spec, checkpoint_command, error_line, fix_line,
                   kernel_ref, kernel_slug, resolve_user, resume_command, spec_options)
from .state import describe_state


# What Kaggle says when every batch GPU session a user may run at once is taken (seen: "Maximum batch GPU session
# count of 2 reached"); the same push goes through once one ends.
SESSIONS_FULL = re.compile(r"session count|sessions? (limit|at a time)|concurrent", re.IGNORECASE)


class SessionsBusy(UserError):
    """A push Kaggle refused because the user's GPU sessions at a time are all running: worth trying again."""


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


def push(spec: KernelSpec, out_root: Path = Path("kernels/build"), runs: Path = Path("runs"),
         dry_run: bool = False) -> str:
    """Build, then `kernels_push` with the accelerator: the kernel starts running on Kaggle; returns its URL.

    The push is recorded in runs/<run>/kernels.json, and the new version is told which earlier output it must
    find mounted (the latest usable kernel-state.json known), so that it stops at once instead of starting over.
    A kernel Kaggle knows but the record lacks (kernels.json deleted, another machine) has its record rebuilt from
    its latest output first. dry_run: a version saved without a session (kaggle 2.2.5's no_run): Kaggle checks the
    metadata and sources, no GPU time is spent."""
    check_spec(spec)
    user = resolve_user(spec.user)
    warn(spec.accelerator)
    ref, slug = kernel_ref(spec, user), kernel_slug(spec)
    records = kernel_records.load(spec.run_name, runs)  # a damaged record: one line before Kaggle is asked
    api = get_api()
    check_owner(api, user, ref, "the kernel")
    pushed_before = sync_record(api, records, spec, ref, runs)
    number = kernel_records.next_push(records, slug)
    if dry_run:
        return _dry_run(api, records, spec, ref, out_root, runs, user, number)
    if pushed_before:
        _refuse_while_running(api, ref, spec)
        _refuse_stranded(records, spec, ref, slug)
    expect = None if spec.fresh else kernel_records.expected_state(records, slug, spec.resume_from)
    dataset = None if spec.fresh or spec.resume_from == "self" else _checkpoint_dataset(api, records, slug, spec)
    resume = {"push": number, "expect": expect, "fresh": spec.fresh, "fix": fix_line(spec),
              **({"dataset": dataset} if dataset else {})}
    folder = write_folder(spec, user, out_root, resume)
    # not retried: a push that failed after reaching Kaggle may already have started a run
    response = call(api.kernels_push, str(folder), None, accelerator(spec.accelerator).machine_shape,
                           what=f"pushing {folder} as {ref}", retry=False)
    if response.error:
        said = " ".join(response.error.split())
        if SESSIONS_FULL.search(said):
            raise SessionsBusy(f"Kaggle runs your {MAX_SESSIONS} GPU sessions at a time already: {said}")
        raise UserError(f"Kaggle refused the push of {ref}: {said}")
    _warn_sources(response, ref)
    kernel_records.note_push(records, slug, ref=ref, task=spec.task, fold=spec.fold if spec.task == "train" else None,
                             push=number, version=response.version_number, fresh=spec.fresh, expect=expect)
    kernel_records.save(spec.run_name, records, runs)
    url = response.url or f"https://www.kaggle.com/code/{ref}"
    version = f" version {response.version_number}" if response.version_number else ""
    resumes = ("starting over (--fresh)" if spec.fresh else f"must resume from {describe_state(expect)}" if expect
               else "no earlier output known: starts from the beginning") + (f" in {dataset}" if dataset else "")
    budget = f"; the fold planned to fit {budget_words(spec)}" if spec.task == "train" else ""
    say(f"pushed {ref}{version} (push {number}, {spec.accelerator}; {resumes}{budget}): {url}; follow it with "
        f"`python -m competition kernel status {spec_options(spec)}`")
    return url


def sync_record(api: Any, records: dict, spec: KernelSpec, ref: str, runs: Path, note: bool = True) -> bool:
    """Whether Kaggle knows the kernel; the record brought up to date first: the state in its latest output noted
    (unless not `note`: the caller reads it), or, when the record lacks a kernel Kaggle knows, its entry rebuilt
    from that output (said in one line)."""
    slug = kernel_slug(spec)
    recorded = kernel_records.entry(records, slug).get("ref")
    if recorded and recorded != ref:
        raise UserError(f"{kernel_records.record_path(spec.run_name, runs)} records {slug} as {recorded}, not {ref}: "
                        f"it is another user's record; {kernel_records.REBUILD}")
    if kernel_records.entry(records, slug).get("pushes"):
        if note and not spec.fresh:
            kernel_records.note_state(records, slug, kernel_state(api, ref, missing_ok=True))
        return True
    if known_status(api, ref) is None:  # Kaggle answers 403 for a kernel never pushed: the first push
        return False
    state = kernel_state(api, ref, missing_ok=True)
    kernel_records.rebuild(records, slug, ref=ref, task=spec.task, fold=spec.fold if spec.task == "train" else None,
                           state=state)
    kernel_records.save(spec.run_name, records, runs)
    say(f"{kernel_records.record_path(spec.run_name, runs)} had no record of {ref}, which Kaggle knows: rebuilt from "
        f"its latest output ({describe_state(state)})")
    return True


def _dry_run(api: Any, records: dict, spec: KernelSpec, ref: str, out_root: Path, runs: Path, user: str,
             number: int) -> str:
    """kernels_push(no_run=True): a version saved without running, for Kaggle to check the metadata and sources.
    Refused once the kernel has an output to resume from: the saved version would become its latest, which the
    next version may mount instead of that output."""
    slug = kernel_slug(spec)
    if kernel_records.expected_state(records, slug) is not None:
        raise UserError(f"--dry-run of {ref}, which has an output to resume from: the saved version would become its "
                        f"latest, which the next version may mount instead; check the sources with another --run")
    folder = write_folder(spec, user, out_root, {"push": number, "expect": None, "fresh": spec.fresh,
                                                 "fix": fix_line(spec)})
    response = call(api.kernels_push, str(folder), None, accelerator(spec.accelerator).machine_shape, True,
                    what=f"saving {folder} as {ref} without running it", retry=False)
    if response.error:
        raise UserError(f"Kaggle refused {ref}: {' '.join(response.error.split())} (nothing ran)")
    bad = _warn_sources(response, ref)
    kernel_records.note_push(records, slug, ref=ref, task=spec.task, fold=spec.fold if spec.task == "train" else None,
                             push=number, version=response.version_number, fresh=spec.fresh, expect=None,
                             dry_run=True)
    kernel_records.save(spec.run_name, records, runs)
    sources = ", but not every source (above)" if bad else " and every source"
    say(f"saved {ref} version {response.version_number} without running it (no GPU time): Kaggle accepted its "
        f"metadata{sources}; push without --dry-run to run it")
    return response.url or f"https://www.kaggle.com/code/{ref}"


def _warn_sources(response: Any, ref: str) -> bool:
    """A warning for each source Kaggle did not attach (its own slug is no source yet at the first push); whether
    there was one."""
    warned = False
    for kind, bad, fix in (
            ("competition", response.invalid_competition_sources,
             f"accept the rules at https://www.kaggle.com/competitions/{COMPETITION}/rules"),
            ("kernel", [b for b in response.invalid_kernel_sources or [] if b.strip("/") != ref],
             "push the train kernels first and let them finish"),
            ("dataset", response.invalid_dataset_sources, "check the dataset slugs")):
        if bad:
            print(f"warning: Kaggle did not attach the {kind} source(s) {', '.join(bad)} to {ref}: {fix}; "
                  f"then push again", file=sys.stderr, flush=True)
            warned = True
    return warned


def _refuse_while_running(api: Any, ref: str, spec: KernelSpec) -> None:
    """A version not yet ended (machines.ACTIVE: queued, running, ...) has not left its output: a new one now could
    not resume from it."""
    state, _ = session_status(api, ref)
    if state in ACTIVE:
        raise UserError(f"{ref} is {state}: a new version now could not resume from its output; wait until it "
                        f"ends (`python -m competition kernel status {spec_options(spec)}`), then push again")


def _refuse_stranded(records: dict, spec: KernelSpec, ref: str, slug: str) -> None:
    """A re-push resuming from the kernel's own output when its latest version left nothing to resume from (it
    stopped in its first minute): the new version would mount that output and stop too. One line with the way
    on: the last usable version's output through a checkpoint, or --fresh."""
    if spec.fresh or spec.resume_from != "self":
        return
    latest = kernel_records.entry(records, slug)["pushes"][-1]
    outcome = latest.get("outcome")
    if outcome and outcome.get("state") not in kernel_records.USABLE:
        detail = outcome.get("detail") or outcome.get("state")
        raise UserError(f"{ref}'s latest version (push {latest['push']}) left nothing to resume from ({detail}); "
                        f"{resume_hint(records, spec, slug, latest)}")


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
    at its time limit (its STATE_FILE says so), and ERROR's failure message. Any ended kernel's output is read
    for its STATE_FILE: one that failed or was cancelled may have left a backup to resume from."""
    state, message = session_status(api, ref)
    record = kernel_state(api, ref) if state not in ACTIVE else None
    if record and record.get("state") == "time-limited":
        return "TIME_LIMITED", record.get("detail", ""), record
    return state, message, record


def status(spec: KernelSpec, runs: Path = Path("runs")) -> str:
    """Print the kernel's status; ERROR is a one-line UserError carrying Kaggle's failure message.

    A kernel that stopped at its time limit, or was stopped or failed before finishing, says so with the
    exact command that resumes it. The state seen is recorded in runs/<run>/kernels.json."""
    check_spec(spec)
    ref, slug = kernel_ref(spec, resolve_user(spec.user)), kernel_slug(spec)
    api = get_api()
    records = kernel_records.load(spec.run_name, runs)
    if not sync_record(api, records, spec, ref, runs, note=False):  # poll reads the output's state
        raise UserError(f"Kaggle knows no kernel {ref} of yours (it answers 403): push it with "
                        f"`{resume_command(spec)}`")
    state, message, record = poll(api, ref)
    kernel_records.note_state(records, slug, record)
    latest = kernel_records.entry(records, slug)["pushes"][-1]
    if record is None and state not in ACTIVE:  # it ended without a kernel-state.json: nothing to resume from
        kernel_records.note_outcome(records, slug, latest["push"], {"state": "nothing", "detail": message or state})
    kernel_records.save(spec.run_name, records, runs)
    resume = resume_hint(records, spec, slug, latest)
    if record is not None and record.get("state") not in kernel_records.USABLE:  # stopped in its first minute
        raise UserError(f"{ref} stopped before it trained or predicted: {record.get('detail') or record['state']}; "
                        f"{resume}")
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


def resume_hint(records: dict, spec: KernelSpec, slug: str, latest: dict) -> str:
    """How to go on from the kernel's versions: from the latest one's output when it is usable, else from the last
    version whose output is (checkpointed as a dataset, then pushed from it: a new version would mount the latest
    output, which holds nothing), else from the start."""
    usable = kernel_records.last_usable(records, slug)
    if (latest.get("outcome") or {}).get("state") in kernel_records.USABLE or usable is None and not latest.get(
            "outcome"):
        return f"resume it with `{resume_command(spec)}` (the new version continues from this one's output)"
    if usable is None:
        return f"no version left an output to resume from: start over with `{resume_command(spec)} --fresh`"
    from_dataset = resume_command(dataclasses.replace(spec, resume_from="dataset"))
    return (f"its last usable output is version {usable['version']}'s ({describe_state(usable['outcome'])}): "
            f"resume from it with `{checkpoint_command(spec)} --version {usable['version']}`, then `{from_dataset}`")


def logs(spec: KernelSpec, version: int | None = None) -> int:
    """Print the kernel's log (version: that version's), following it while the session runs; returns its lines."""
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    source = f"{ref}/{version}" if version else ref
    count = 0
    for line in log_lines(get_api(), source):
        print(line, end="" if line.endswith("\n") else "\n", flush=True)
        count += 1
    if not count:
        say(f"{source}: no log yet (a kernel still QUEUED has none)")
    return count


def quota_line(q: dict) -> str:
    return (f"GPU quota: {q['used_h']:.1f} of {q['total_h']:.1f} h used this week, {q['left_h']:.1f} h left; it "
            f"refreshes {q['refresh']}")


def show_quota() -> dict:
    """Print this week's GPU quota: used, allowed, left, and when it refreshes."""
    q = quota(get_api())
    say(quota_line(q))
    return q


def default_dest(spec: KernelSpec) -> Path:
    """runs/<name>/ for a train kernel (its output is the run folder), submissions/ for predict."""
    return Path("runs") / spec.run_name if spec.task == "train" else Path("submissions")


def output(spec: KernelSpec, dest: Path | None = None, version: int | None = None) -> list[Path]:
    """Download a COMPLETE kernel's outputs (version: that version's) into runs/<name>/ or submissions/; each file
    appears whole."""
    check_spec(spec)
    ref = kernel_ref(spec, resolve_user(spec.user))
    source = f"{ref}/{version}" if version else ref
    dest = dest or default_dest(spec)
    api = get_api()
    state, message = session_status(api, source)
    if state == "ERROR" and not version:
        raise UserError(error_line(ref, message))
    if state != "COMPLETE" and not (version and state == "ERROR"):
        raise UserError(f"{source} is {state}, not COMPLETE: nothing to download yet; "
                        f"`python -m competition kernel status {spec_options(spec)}` tells when it is done")
    staging = dest / f".kernel-output-{kernel_slug(spec)}"  # resumable; files move into dest when all arrived
    call(api.kernels_output, source, str(staging), what=f"downloading the output of {source}")
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
