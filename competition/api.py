"""The toolkit from Python (a notebook, a script): the same steps as the command line, each one call with plain
arguments. Documented with a worked example in docs/api.md, which tests/test_api.py runs.

    from competition import api
    data = api.synth("data/synthetic")
    api.train_fold("demo", data, run="runs/demo", fold=0)
    print(api.score_fold("runs/demo", data, fold=0)["dice_mean"])
    api.predict("runs/demo", data, "submissions/demo.csv.gz")

Errors are `competition.base.errors.UserError`, one line each, as the command line prints them.
"""
from __future__ import annotations

import time
from pathlib import Path

from .base.errors import UserError
from .config import preset
from .data.synth import SynthSpec, generate
from .inference.predict import predict as _predict_run
from .kaggle.leaderboard import run_rows
from .kaggle.submit import submit as _submit
from .scoring.score import score_fold as _score_fold
from .training.stage import train_fold as _train_fold

__all__ = ["UserError", "synth", "train_fold", "score_fold", "predict", "submit", "runs"]


def synth(out: str | Path = "data/synthetic", cars: int = 8, test: int = 8, seed: int = 0) -> str:
    """Write the synthetic Carvana-shaped dataset (Kaggle's file names and formats) into `out` (kept when it is
    there); returns its path, for `data`."""
    generate(Path(out), SynthSpec(cars=cars, test=test, seed=seed, varied=True))
    return str(out)


def train_fold(preset_name: str, data: str | Path, run: str | Path, fold: int = 0, budget: float | None = None,
               cache: str | Path | None = "cache", **settings) -> dict:
    """Train (or resume) fold `fold` of `preset_name` on `data` into the run folder `run`, and the refiner net the
    preset asks for; settings: TrainConfig fields on top (epochs=3, lr=1e-3, ...); budget: seconds for the whole
    fold (`train --budget`) instead of the preset's epochs. Returns the fold's summary (train.json)."""
    cfg = preset(preset_name, **settings)
    return _train_fold(cfg, data=str(data), run_dir=Path(run), fold=fold, cache_dir=None if cache is None else Path(cache),
                       budget=budget, started=time.monotonic() if budget is not None else None)


def score_fold(run: str | Path, data: str | Path, fold: int = 0, tta: str = "hflip",
               tune_threshold: bool = False) -> dict:
    """Kaggle's dice on fold `fold`'s held-out photos at 1918x1280 (per image, by view, by make); writes the fold's
    score.json and scores.csv; returns the summary (dice_mean, best_threshold, worst photos...)."""
    return _score_fold(Path(run), fold, str(data), tta, tune_threshold=tune_threshold)


def predict(run: str | Path, data: str | Path, out: str | Path, folds: list[int] | None = None,
            tta: str = "hflip") -> Path:
    """The test set predicted with the run's folds (all trained ones by default), validated against the sample;
    returns the submission's path (resumable: the same call goes on where it stopped)."""
    return _predict_run(Path(run), str(data), Path(out), folds=folds, tta=tta)


def submit(path: str | Path, message: str, data: str | Path | None = None) -> None:
    """Validate the submission against the sample (from `data`, or data/carvana) and upload it through the kaggle
    package (credentials needed), recorded for `runs`."""
    _submit(Path(path), message, None, None if data is None else str(data))


def runs(folder: str | Path = "runs") -> list[dict]:
    """One dict per run under `folder`: preset, folds trained, dice, threshold, training minutes."""
    return run_rows(Path(folder))
