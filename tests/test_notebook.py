"""The Kaggle notebook: committed without outputs, built with the toolkit embedded, and executed end to end
(nbclient, a real Jupyter kernel) on the synthetic dataset with the tiny preset, so it never rots."""
import base64
import io
import json
import os
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from competition.cli import main
from competition.base.errors import UserError
from competition.kaggle.build import package_zip
from competition.kaggle.spec import KernelSpec
from competition.kaggle.notebook import NOTEBOOK_FILE, TEMPLATE_DIR, filled_notebook, kernel_command

ROOT = Path(__file__).resolve().parents[1]


def _code(nb) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_committed_notebook_has_no_outputs_and_uses_the_api_not_the_shell():
    nb = nbformat.read(TEMPLATE_DIR / NOTEBOOK_FILE, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    code = _code(nb)
    assert "!" not in [line.lstrip()[:1] for line in code.splitlines()] and "subprocess" not in code
    assert "%%bash" not in code and "os.system" not in code
    for api in ("assign_folds(", "train(", "score_fold(", "worst_overlays(", "predict(", "validate_submission("):
        assert api in code
    meta = json.loads((TEMPLATE_DIR / "kernel-metadata.json").read_text())
    assert meta["kernel_type"] == "notebook" and meta["code_file"] == NOTEBOOK_FILE


def test_build_embeds_the_package_and_settings(tmp_path):
    assert main(["kernel", "build", "--task", "notebook", "--preset", "tiny", "--name", "nb", "--fold", "1",
                 "--user", "someone", "--accelerator", "none", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "carvana-nb-notebook"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "someone/carvana-nb-notebook" and meta["kernel_type"] == "notebook"
    assert meta["code_file"] == NOTEBOOK_FILE and meta["enable_gpu"] is False and "machine_shape" not in meta
    nb = nbformat.read(folder / NOTEBOOK_FILE, as_version=4)
    nbformat.validate(nb)
    code = _code(nb)
    assert "SETTINGS = {'name': 'nb', 'preset': 'tiny', 'fold': 1, 'epochs': None, 'tta': 'hflip'}" in code
    namespace: dict = {}
    toolkit_cell = next(c for c in nb.cells if "PACKAGE_ZIP = " in "".join(c.source))
    line = "".join(toolkit_cell.source)
    exec(line[line.index("PACKAGE_ZIP = "):line.index('"""\n\nif')] + '"""', namespace)
    embedded = base64.b64decode("".join(namespace["PACKAGE_ZIP"].split()))
    assert embedded == package_zip()  # the same zip the script kernels carry
    assert "competition/scoring/score.py" in zipfile.ZipFile(io.BytesIO(embedded)).namelist()


def test_build_refuses_a_bad_fold_and_push_says_how(tmp_path):
    assert main(["kernel", "build", "--task", "notebook", "--preset", "tiny", "--fold", "5", "--user", "u",
                 "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match="kaggle kernels push -p"):
        kernel_command("push", KernelSpec(task="notebook", preset="tiny", user="u"), tmp_path)


def test_notebook_runs_end_to_end_on_synthetic_data(tmp_path, synth_zip_dir, monkeypatch):
    """The built notebook (toolkit unpacked from its own zip), run by a Jupyter kernel in an empty folder,
    on Kaggle-like zips (2 cars, 4 test images) read in place."""
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.reads(json.dumps(filled_notebook(KernelSpec(task="notebook", preset="tiny", name="nb"))), as_version=4)
    for key in [k for k in os.environ if k.startswith("CARVANA_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel must find the toolkit it unpacked, not ours
    monkeypatch.setenv("CARVANA_DATA", str(synth_zip_dir))
    monkeypatch.setenv("CARVANA_PRESET", "tiny")
    monkeypatch.setenv("CARVANA_WORK", str(work))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    outputs = [c.outputs for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(o.get("text", "") for out in outputs for o in out if o.output_type == "stream")
    assert f"from {work / 'toolkit' / 'competition'}" in text  # the embedded package, unpacked beside it
    pngs = [sum("image/png" in o.get("data", {}) for o in out) for out in outputs]
    cell_of = {api: i for i, c in enumerate(c for c in nb.cells if c.cell_type == "code")
               for api in ("plt.subplots(2", "train_fold(cfg", "worst_overlays(") if api in "".join(c.source)}
    assert pngs[cell_of["plt.subplots(2"]] == 2  # images + masks, and one outline
    assert pngs[cell_of["train_fold(cfg"]] == 1      # the curves
    assert pngs[cell_of["worst_overlays("]] == 4  # the 4 worst held-out images
    run = work / "runs" / "nb"
    held_out = [line for line in (run / "folds.csv").read_text().splitlines()[1:] if line.endswith(",0")]
    score = json.loads((run / "fold0" / "score.json").read_text())
    assert score["images"] == len(held_out) == 16 and (run / "fold0" / "report.html").is_file()
    assert "submission.csv.gz: 4 rows, valid against the sample submission" in text
