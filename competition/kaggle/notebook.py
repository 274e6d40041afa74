"""The Kaggle notebook: kernels/notebook/carvana.ipynb, built into a push folder with the toolkit embedded.

The notebook drives the toolkit's Python API cell by cell (data, folds, one fold trained, its curves,
its score with the worst overlays, a validated submission). `build` writes kernels/build/<slug>/ with
kernel-metadata.json (kernel_type notebook) and the notebook, whose toolkit cell carries the `competition`
package as the same base64 zip the script kernels embed (`kernels.package_zip`), and whose parameters
cell gets the run's SETTINGS. Outputs are never stored: the committed template has none, a built one neither.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import read_json, write_json, write_text
from ..data.folds import check_fold
from .build import METADATA_FILE, fill_line, package_literal, with_machine
from .machines import accelerator, warn
from .spec import TEMPLATES, KernelSpec, preset_folds, resolve_user, slugify

TEMPLATE_DIR = TEMPLATES / "notebook"
NOTEBOOK_FILE = "carvana.ipynb"


def notebook_title(spec: KernelSpec) -> str:
    """The notebook's title; its slug is the kernel's id."""
    return f"carvana {spec.run_name} notebook"


def notebook_ref(spec: KernelSpec, user: str) -> str:
    return f"{user}/{slugify(notebook_title(spec))}"


def check_notebook_spec(spec: KernelSpec) -> None:
    """One-line UserErrors for a notebook that cannot work, before anything is written."""
    accelerator(spec.accelerator)
    if not slugify(spec.run_name):
        raise UserError(f"--name {spec.run_name!r}: needs letters or digits (it becomes part of the kernel's slug)")
    check_fold(spec.fold, preset_folds(spec.preset), f"preset {spec.preset}")
    if spec.epochs is not None and spec.epochs < 1:
        raise UserError(f"--epochs {spec.epochs}: must be at least 1")


def strip_outputs(nb: dict) -> dict:
    """The notebook without outputs or execution counts (what is committed and pushed)."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def _fill_line(nb: dict, name: str, value: str) -> dict:
    """Replace the one line `NAME = ...` among the code cells by `NAME = value`."""
    pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
    hits = [c for c in nb["cells"] if c["cell_type"] == "code" and pattern.search("".join(c["source"]))]
    if len(hits) != 1:
        raise RuntimeError(f"the notebook template needs exactly one line starting '{name} = '")
    text = fill_line("".join(hits[0]["source"]), name, value, "the notebook template")
    hits[0]["source"] = text.splitlines(keepends=True)
    return nb


def notebook_settings(spec: KernelSpec) -> dict:
    """The SETTINGS dict the parameters cell starts from."""
    return {"name": spec.run_name, "preset": spec.preset, "fold": spec.fold, "epochs": spec.epochs, "tta": spec.tta}


def filled_notebook(spec: KernelSpec, package: bytes | None = None) -> dict:
    """The template notebook with SETTINGS and the embedded package filled in, outputs stripped."""
    nb = strip_outputs(json.loads((TEMPLATE_DIR / NOTEBOOK_FILE).read_text()))
    nb = _fill_line(nb, "SETTINGS", repr(notebook_settings(spec)))
    return _fill_line(nb, "PACKAGE_ZIP", package_literal(package))


def notebook_metadata(spec: KernelSpec, user: str) -> dict:
    """The filled-in kernel-metadata.json of the notebook."""
    meta = with_machine(read_json(TEMPLATE_DIR / METADATA_FILE), spec.accelerator)
    meta.update(id=notebook_ref(spec, user), title=notebook_title(spec), code_file=NOTEBOOK_FILE,
                kernel_type="notebook")
    return meta


def build(spec: KernelSpec, out_root: Path = Path("kernels/build")) -> Path:
    """Write kernels/build/<slug>/ (kernel-metadata.json + carvana.ipynb); returns the folder."""
    check_notebook_spec(spec)
    user = resolve_user(spec.user)
    warn(spec.accelerator)
    folder = out_root / slugify(notebook_title(spec))
    write_json(folder / METADATA_FILE, notebook_metadata(spec, user))
    write_text(folder / NOTEBOOK_FILE, json.dumps(filled_notebook(spec), indent=1, ensure_ascii=False) + "\n")
    size_kb = (folder / NOTEBOOK_FILE).stat().st_size // 1024
    say(f"wrote {folder}/ ({METADATA_FILE}, {NOTEBOOK_FILE} with the toolkit embedded, {size_kb} KB) for "
        f"{notebook_ref(spec, user)}; push it with `kaggle kernels push -p {folder}`, or open the notebook "
        f"in Jupyter")
    return folder


def kernel_command(action: str, spec: KernelSpec, out_root: Path) -> None:
    """`kernel <action> --task notebook`: build it; the other actions are a one-line UserError saying how."""
    if action != "build":
        raise UserError(f"kernel {action} --task notebook: the toolkit only builds the notebook; push it with "
                        f"`kaggle kernels push -p {out_root / slugify(notebook_title(spec))}` and follow it on Kaggle")
    build(spec, out_root)
