"""docs/api.md's worked example, run as a user would run it: the file as the page shows it, in a fresh folder,
with the toolkit's Python API (competition/api.py)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import forkserver
from conftest import DETERMINISTIC

ROOT = Path(__file__).resolve().parents[1]


def test_the_worked_example_runs_as_written(tmp_path):
    text = (ROOT / "docs" / "api.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", text, re.S)
    (tmp_path / "example.py").write_text(example)
    env = {**os.environ, **DETERMINISTIC, "COMPETITION_XLA_CACHE": str(tmp_path / "xla.json")}
    r = forkserver.run([sys.executable, "example.py"], cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "trained 2 epochs" in out and re.search(r"held-out dice 0\.\d+", out)
    assert f"wrote {Path('submissions/demo.csv.gz')}" in out and (tmp_path / "submissions" / "demo.csv.gz").is_file()
    assert re.search(r"^demo demo 1/2 fold 0 0\.\d+", out, re.M)
    assert (tmp_path / "runs" / "demo" / "fold0" / "score.json").is_file()
