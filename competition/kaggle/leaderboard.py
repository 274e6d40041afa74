"""`runs`: one row per run under runs/ (preset, trained folds, cross-validated or per-fold dice, threshold, training
time) and, under it, the submissions made from it (submissions/submitted.json, which `submit` writes) with the
public and private scores Kaggle gave them (kaggle 2.2.5 competition_submissions), matched by file name and
message. Without credentials the scores say so; nothing is written.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..base.errors import UserError
from ..config import load_config
from ..runs.folder import trained_folds
from ..runs.history import read_history
from ..runs.resume import is_finished, retrain
from ..scoring.report import read_score
from .submit import read_submitted


def _cv(run_dir: Path) -> str:
    """Out-of-fold dice when `cv` ran (scores.csv), else each scored fold's, else '-'."""
    scores = run_dir / "scores.csv"
    if scores.is_file():
        try:
            dice = pd.read_csv(scores)["dice"]
        except (ValueError, KeyError, pd.errors.ParserError) as e:
            raise UserError(f"{scores} is damaged ({e}): run `cv --run {run_dir}` again") from None
        return f"{dice.mean():.5f} out of fold ({len(dice)} photos)"
    folds = [(k, read_score(run_dir / f"fold{k}")) for k in trained_folds(run_dir)
             if (run_dir / f"fold{k}" / "score.json").is_file()]
    return ", ".join(f"fold {k} {s['dice_mean']:.5f}" for k, s in folds) or "-"


def _minutes(run_dir: Path) -> float:
    """Minutes of training over the run's folds (their history.csv's epoch seconds)."""
    total = 0.0
    for k in trained_folds(run_dir):
        path = run_dir / f"fold{k}" / "history.csv"
        if path.is_file():
            total += sum(r.get("seconds", 0.0) for r in read_history(path, retrain(run_dir / f"fold{k}")))
    return total / 60


def run_rows(runs: Path) -> list[dict]:
    """Every run folder under `runs` (one with a config.json), by name."""
    rows = []
    for run_dir in sorted(p for p in runs.glob("*/") if (p / "config.json").is_file()):
        cfg = load_config(run_dir / "config.json")
        folds = trained_folds(run_dir)
        finished = [k for k in folds if is_finished(run_dir / f"fold{k}")]
        rows.append({"run": run_dir.name, "path": str(run_dir), "preset": cfg.preset,
                     "folds": f"{len(finished)}/{cfg.k}" + (f" (+{len(folds) - len(finished)} training)"
                                                            if len(folds) > len(finished) else ""),
                     "dice": _cv(run_dir), "threshold": cfg.threshold, "minutes": _minutes(run_dir)})
    return rows


def made_by(entry: dict, run: dict) -> bool:
    """Whether a submitted file was made by `run` (its record names the run's folder, or its name)."""
    made = entry.get("made") or {}
    named = [made.get("run")] + list(made.get("runs") or [])
    return any(n and (Path(n).name == run["run"] or n == run["path"]) for n in named)


def scored(entry: dict, kaggle: list[dict] | None) -> str:
    """Kaggle's public / private score of a submitted file, or why there is none."""
    if kaggle is None:
        return "not fetched"
    match = next((k for k in kaggle if k["file"] == entry["file"] and k["message"] == entry["message"]), None)
    if match is None:
        return "not in Kaggle's list"
    if match["public"] is None and match["private"] is None:
        return match["status"].lower()
    return f"public {match['public'] or '-'} / private {match['private'] or '-'}"


def render(rows: list[dict], submitted: list[dict], kaggle: list[dict] | None, why_not: str = "") -> str:
    """The table of runs, each followed by the submissions made from it; then those no run here made."""
    lines = ["| run | preset | folds | dice (Kaggle's, native) | threshold | training |", "|---|---|---|---|---|---|"]
    used = set()
    for r in rows:
        minutes = f"{r['minutes']:.0f} min" if r["minutes"] and math.isfinite(r["minutes"]) else "-"
        lines.append(f"| {r['run']} | {r['preset']} | {r['folds']} | {r['dice']} | {r['threshold']:g} | {minutes} |")
        for i, entry in enumerate(submitted):
            if made_by(entry, r):
                used.add(i)
                lines.append(f"|  | submitted {entry['at'][:10]} | {entry['file']} | {scored(entry, kaggle)} | "
                             f"{entry['message']} |  |")
    others = [e for i, e in enumerate(submitted) if i not in used]
    for entry in others:
        lines.append(f"| (unknown run) | submitted {entry['at'][:10]} | {entry['file']} | {scored(entry, kaggle)} | "
                     f"{entry['message']} |  |")
    if kaggle is None and submitted:
        lines += ["", f"Kaggle's scores were not fetched: {why_not}"]
    return "\n".join(lines)


def runs_table(runs: Path, submissions: Path, kaggle: list[dict] | None, why_not: str = "") -> str:
    """`runs`' output: every run, every submission from `submissions`, and Kaggle's scores (None: not fetched)."""
    rows = run_rows(runs)
    if not rows and not submissions.is_dir():
        raise UserError(f"no runs under {runs}/ yet: train one with `make train FOLD=0` (or `make demo`)")
    return render(rows, read_submitted(submissions) if submissions.is_dir() else [], kaggle, why_not)
