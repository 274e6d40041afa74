"""Shared test fixtures: the real Carvana samples in ../shared and small synthetic datasets."""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest

import forkserver

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# XLA compiles each tiny test net for a few seconds, which is most of its training: off in tests, except in the
# DETERMINISTIC training processes below, which train under XLA as train chooses it on most CPUs.
os.environ.setdefault("COMPETITION_XLA", "0")
# Where measured XLA choices are kept (runtime.xla_choice): a folder of this test process, never the user's
# ~/.cache (tests/test_train.py measures the choice itself).
os.environ.setdefault("COMPETITION_XLA_CACHE", os.path.join(tempfile.mkdtemp(prefix="competition-xla-"), "xla.json"))
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # one per run, shared by its pytest-xdist processes

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


# The test files that take longest (seconds on 2 idle cores, 2026-12-05), first. `make test` runs pytest-xdist with
# --dist loadfile --no-loadscope-reorder: whole files go to the two test processes in collection order, each to the
# one that is free, so the long ones start early and the short ones fill the ends. In xdist's default order (most
# tests first) the 80-second bench came last and one process ran 70 s after the other had finished.
LONGEST_FIRST = ("test_bench.py", "test_kernels.py", "test_train.py", "test_refinenet.py", "test_reliability.py",
                 "test_encoders.py", "test_stage.py", "test_locks.py", "test_blend.py", "test_bad_input.py",
                 "test_timelimit.py", "test_plan.py", "test_score.py", "test_notebook.py", "test_pre_redesign.py", "test_crops.py",
                 "test_calibrate.py", "test_predict_submission.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests in LONGEST_FIRST's file order, then the rest as collected (a name there that no longer exists fails
    here, so the list cannot quietly go stale)."""
    gone = [name for name in LONGEST_FIRST if not (Path(__file__).parent / name).is_file()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that do not exist: {', '.join(gone)}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)).name, len(rank)))


def pytest_terminal_summary(terminalreporter) -> None:
    """Without the real samples: one line at the end saying how many tests skipped, what they need and where."""
    missing = fixtures_missing()
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if missing and missing in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} skipped: {missing}")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, built by `build(folder)` once for all the test processes of this run: under
    pytest-xdist the first process to ask builds it (the others wait on a lock) in the folder their temporary
    folders share; a failed build leaves nothing behind for the others to take. Read-only to the tests."""
    base = tmp_path_factory.getbasetemp()
    if _RUN_ID:
        base = base.parent
    out, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """3 cars x 16 views + 8 test images at native size, as folders."""
    from competition.data.synth import SynthSpec, generate
    return built_once(tmp_path_factory, "synth", lambda out: generate(out, SynthSpec(cars=3, test=8, seed=1)))


@pytest.fixture(scope="session")
def synth_zip_dir(tmp_path_factory) -> Path:
    """The same kind of dataset as Kaggle's zips."""
    from competition.data.synth import SynthSpec, generate
    return built_once(tmp_path_factory, "synthzip",
                      lambda out: generate(out, SynthSpec(cars=2, test=4, seed=2, zip=True)))


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


TINY = dict(epochs=8, patience=1, k=3)  # patience 1: early stopping fires well before epoch 8
# TF's CPU kernels are not bit-identical from one process to the next without this; with it, a resumed
# training can be compared exactly with an uninterrupted one (tests/test_reliability.py). Only for the
# training processes: with it, TF refuses any random op without a seed. Keras compiles nothing with XLA under
# TF_DETERMINISTIC_OPS (keras trainer.model_supports_jit returns False when op determinism is on), so these runs
# train without XLA whatever train chooses: COMPETITION_XLA=0 says so and skips the choice's probe. Resume under
# XLA is not compared bit for bit anywhere (XLA's own kernels are not promised deterministic).
DETERMINISTIC = {"TF_DETERMINISTIC_OPS": "1", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
                 "COMPETITION_XLA": "0"}


def tiny_train_args(synth_dir: Path, runs: Path, cache: Path) -> list[str]:
    """The CLI arguments that train trained_run (fold 0 of run `tiny` under `runs`)."""
    return ["--quiet", "train", "--preset", "tiny", "--name", "tiny", "--fold", "0", "--data", str(synth_dir),
            "--runs", str(runs), "--cache", str(cache), *[x for k, v in TINY.items() for x in (f"--{k}", str(v))]]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_dir) -> Path:
    """A tiny U-Net trained on fold 0 of the synthetic set until early stopping fired. Read-only: use tiny_run."""
    def train(root: Path) -> None:
        r = forkserver.run([sys.executable, "-m", "competition", *tiny_train_args(synth_dir, root, root / "cache")],
                           env={**os.environ, **DETERMINISTIC}, timeout=600)
        assert r.returncode == 0, r.stderr
    return built_once(tmp_path_factory, "runs", train) / "tiny"


@pytest.fixture(scope="session")
def tiny_cache(trained_run) -> Path:
    """The image cache trained_run was trained from (pass it to train to skip decoding)."""
    return trained_run.parent / "cache"


@pytest.fixture
def tiny_run(trained_run, tmp_path) -> Path:
    """This test's own copy of the trained run, runs/tiny/fold0: what one test writes no other test sees."""
    dest = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, dest)
    return dest


@pytest.fixture(autouse=True)
def _progress_chatter_restored():
    """A test that runs the CLI's main() with --quiet must not silence the tests after it."""
    from competition.base import console as progress
    quiet = progress.QUIET
    yield
    progress.set_quiet(quiet)


def interrupt_call(monkeypatch, module, name: str, on_call: int) -> list[int]:
    """Make the n-th call of module.name raise KeyboardInterrupt, as a Ctrl-C there would (0: never); returns the
    list that counts the calls."""
    real, calls = getattr(module, name), []

    def dies(*args):
        calls.append(1)
        if len(calls) == on_call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(module, name, dies)
    return calls


def single_probabilities(predictor, ids, read, where, batch):
    """(id, probability) of one predictor over `ids`, through the ensemble's stream as predict runs one run."""
    from competition.inference.ensemble import Member, probabilities
    member = Member(Path("run"), "run", 1.0, None, [0], predictor)
    for image_id, probs in probabilities([member], ids, read, where, batch):
        yield image_id, probs[0]
