"""Shared test fixtures: the real Carvana samples in ../shared and small synthetic datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]
# The real samples are competition data: they live beside the project (../shared on our machines and CI),
# never inside it. A user's clone has none: the tests that need them skip, except under CI, where they fail.
FIXTURES = Path(os.environ.get("CARVANA_FIXTURES", ROOT.parent / "shared" / "fixtures" / "carvana"))


def in_ci() -> bool:
    """True under a CI runner (CI=true, as GitHub Actions and most others set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def fixtures_missing() -> str | None:
    """None when the real samples are there, else one line: what is needed, where, and how to point at it."""
    if (FIXTURES / "train_masks.csv").is_file():
        return None
    return (f"real Carvana samples not found at {FIXTURES} (needs train_masks.csv, metadata.csv and the sample "
            f"JPEG/GIF pairs): set CARVANA_FIXTURES to their folder")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The folder of real Carvana samples; skips the test without it (fails under CI=true)."""
    missing = fixtures_missing()
    if missing:
        (pytest.fail if in_ci() else pytest.skip)(missing)
    return FIXTURES


def pytest_terminal_summary(terminalreporter) -> None:
    """Without the real samples: one line at the end saying how many tests skipped, what they need and where."""
    missing = fixtures_missing()
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if missing and missing in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} skipped: {missing}")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """3 cars x 16 views + 8 test images at native size, as folders."""
    from competition.data.synth import SynthSpec, generate
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthSpec(cars=3, test=8, seed=1))
    return out


@pytest.fixture(scope="session")
def synth_zip_dir(tmp_path_factory) -> Path:
    """The same kind of dataset as Kaggle's zips."""
    from competition.data.synth import SynthSpec, generate
    out = tmp_path_factory.mktemp("synthzip")
    generate(out, SynthSpec(cars=2, test=4, seed=2, zip=True))
    return out


@pytest.fixture
def no_credentials(tmp_path, monkeypatch) -> Path:
    """An environment with no Kaggle credentials anywhere (HOME and KAGGLE_CONFIG_DIR in tmp_path)."""
    for key in list(os.environ):
        if key.startswith("KAGGLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    (tmp_path / "home").mkdir()
    (tmp_path / "kaggle-config").mkdir()
    return tmp_path / "kaggle-config"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synth_dir) -> Path:
    """A tiny U-Net trained for 3 epochs on fold 0 of the synthetic set: runs/tiny/fold0."""
    from competition.config import preset
    from competition.train import train
    root = tmp_path_factory.mktemp("runs")
    cfg = preset("tiny", epochs=3, patience=5, k=3)
    train(cfg, data=str(synth_dir), run_dir=root / "tiny", fold=0, cache_dir=root / "cache")
    return root / "tiny"
