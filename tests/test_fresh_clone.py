"""A user's clone has no real samples beside it: their tests skip with one line; under CI they fail instead."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Two quick tests that need the real samples (and nothing else that is slow).
NEEDS_SAMPLES = ["tests/test_rle.py::test_encode_is_byte_exact_on_all_48_real_masks",
                 "tests/test_rle.py::test_decode_of_reference_equals_gif"]


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env["CARVANA_FIXTURES"] = str(tmp_path / "nowhere")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::DeprecationWarning", *NEEDS_SAMPLES],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_missing_samples_skip_with_one_line_naming_them(tmp_path):
    r = _pytest(tmp_path, ci=None)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 skipped" in out and "error" not in out.lower() and "passed" not in out
    reasons = [line for line in out.splitlines() if "CARVANA_FIXTURES" in line]
    assert len(reasons) == 1, out  # one line for both tests, without -rs (as `make test` runs them)
    assert reasons[0].startswith("2 skipped: real Carvana samples not found")
    assert "CARVANA_FIXTURES" in reasons[0] and str(tmp_path / "nowhere") in reasons[0]
    assert "train_masks.csv" in reasons[0]


def test_missing_samples_fail_under_ci(tmp_path):
    r = _pytest(tmp_path, ci="true")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "2 errors" in out and "skipped" not in out
    assert "CARVANA_FIXTURES" in out and str(tmp_path / "nowhere") in out
