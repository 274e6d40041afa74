"""A kernel's push folder: kernels/build/<slug>/ with kernel-metadata.json (id, title, machine, sources) and the entry
script (kernels/<task>/run.py with its SETTINGS and the `competition` package embedded as a deterministic zip), so
the kernel installs nothing and runs with internet off."""
from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path

from .. import __version__
from ..base.fileio import read_json, write_json, write_text
from .machines import accelerator, session_hours
from .spec import (CODE_FILE, PACKAGE_DIR, TEMPLATES, KernelSpec, blend_members, kernel_ref, kernel_slug,
                   needs_internet, predict_folds, saved_blend_threshold, title, train_refs)

METADATA_FILE = "kernel-metadata.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same package gives the same bytes


def template_metadata(task: str) -> dict:
    """The committed kernels/<task>/kernel-metadata.json (its placeholders are replaced by `metadata`)."""
    return read_json(TEMPLATES / task / METADATA_FILE)


def metadata(spec: KernelSpec, user: str, checkpoint: str | None = None) -> dict:
    """The filled-in kernel-metadata.json: the template with the id, title, accelerator and sources (with
    `checkpoint`, the dataset `kernel checkpoint` made, instead of the kernel's own slug)."""
    meta = with_machine(template_metadata(spec.task), spec.accelerator)
    meta.update(id=kernel_ref(spec, user), title=title(spec), code_file=CODE_FILE)
    # its own slug last: a re-pushed version mounts the earlier version's output and resumes from it
    own = [] if checkpoint else [kernel_ref(spec, user)]
    meta["kernel_sources"] = (train_refs(spec, user) if spec.task == "predict" else []) + own
    meta["enable_internet"] = needs_internet(spec)  # on only to fetch ImageNet weights
    meta["dataset_sources"] = [*meta.get("dataset_sources", []), *(d for d in (spec.weights_dataset, checkpoint) if d)]
    return meta


def kernel_settings(spec: KernelSpec, user: str, resume: dict | None = None) -> dict:
    """The SETTINGS dict the entry script runs with (resume: push, expect, fresh and fix, from `push`)."""
    common = {"task": spec.task, "name": spec.run_name, "preset": spec.preset, "toolkit": __version__,
              "kernel": kernel_ref(spec, user), "accelerator": accelerator(spec.accelerator).name,
              "session_hours": session_hours(spec.session_hours), "accept_machine": spec.accept_machine,
              "time_limit": spec.time_limit, "budget": spec.budget,
              **(resume or {"fresh": spec.fresh})}
    if spec.task == "train":
        options = {"encoder": spec.encoder, "encoder_weights": spec.encoder_weights,
                   "freeze_encoder": spec.freeze_encoder, "weights_dataset": spec.weights_dataset,
                   "filters": spec.filters}
        return {**common, "fold": spec.fold, "epochs": spec.epochs, "score": spec.score,
                **{k: v for k, v in options.items() if v is not None}}
    if spec.blend:  # each run gathered apart, then every one passed to predict with its folds and weight
        return {**common, "blend": blend_members(spec, user), "threshold": saved_blend_threshold(spec),
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


def fill_line(text: str, name: str, value: str, what: str = "the entry-script template") -> str:
    """Replace the template's one line `NAME = ...` by `NAME = value`."""
    pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
    if len(pattern.findall(text)) != 1:
        raise RuntimeError(f"{what} needs exactly one line starting '{name} = '")
    return pattern.sub(lambda _: f"{name} = {value}", text)


def package_literal(package: bytes | None = None) -> str:
    """The package zip as the triple-quoted base64 literal of a template's PACKAGE_ZIP line."""
    encoded = base64.b64encode(package if package is not None else package_zip()).decode("ascii")
    wrapped = "\n".join(encoded[i:i + 100] for i in range(0, len(encoded), 100))
    return f'"""\n{wrapped}\n"""'


def with_machine(meta: dict, name: str) -> dict:
    """kernel-metadata.json asking for the accelerator `name` (machines.ACCELERATORS): its machine_shape, read by a
    hand-run `kaggle kernels push` too, and enable_gpu; none for a CPU-only kernel."""
    shape = accelerator(name).machine_shape
    meta = {**meta, "enable_gpu": shape is not None}
    meta.pop("machine_shape", None)
    return {**meta, "machine_shape": shape} if shape else meta


def entry_script(spec: KernelSpec, user: str, package: bytes | None = None, resume: dict | None = None) -> str:
    """kernels/<task>/run.py with SETTINGS and the embedded package filled in."""
    text = (TEMPLATES / spec.task / CODE_FILE).read_text()
    settings = repr(kernel_settings(spec, user, resume))  # a Python literal: str, int, None, lists
    return fill_line(fill_line(text, "SETTINGS", settings), "PACKAGE_ZIP", package_literal(package))


def write_folder(spec: KernelSpec, user: str, out_root: Path, resume: dict | None = None) -> Path:
    """kernels/build/<slug>/ with kernel-metadata.json and the entry script, both made before either is written."""
    folder = out_root / kernel_slug(spec)
    meta = metadata(spec, user, (resume or {}).get("dataset"))
    script = entry_script(spec, user, resume=resume)  # both made before either is written
    write_json(folder / METADATA_FILE, meta)
    write_text(folder / CODE_FILE, script)
    return folder


