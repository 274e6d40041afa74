"""`clean`: delete what the toolkit can make again, and only that.

By default: the image caches, the push folders `kernel build` writes, the synthetic set, and the demo's run and
submission. With `everything`: every run and submission too — but never a run's record of its pushed kernels
(`keep`, e.g. kernels.json): it is what stops a re-push from restarting a fold that Kaggle has half-trained, so it
stays, and `clean` says where. A run being trained (its lock held) stops the whole clean before anything goes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..base.console import say
from .lock import check_free, fold_lock, run_lock

CACHES = ("cache", "kernels/build", "data/synthetic")  # made again by train, kernel build, synth
DEMO = ("runs/demo", "submissions/demo.csv.gz", "submissions/demo.csv.gz.json")  # `make demo`'s


def targets(root: Path, everything: bool) -> list[Path]:
    """What `clean` would delete under `root`, existing paths only, in order."""
    names = [*CACHES, *DEMO]
    paths = [root / n for n in names]
    if everything:
        paths += sorted((root / "runs").glob("*/")) + sorted((root / "submissions").glob("*.csv*"))
    seen: list[Path] = []
    for p in paths:
        if (p.exists() or p.is_symlink()) and p not in seen:
            seen.append(p)
    return seen


def check_idle(paths: list[Path]) -> None:
    """One line, before anything is deleted, when a run among `paths` is being trained."""
    for run_dir in (p for p in paths if p.parent.name == "runs" and p.is_dir()):
        why = "clean deletes nothing while a run trains; run it once the training ends"
        check_free(run_lock(run_dir), why)
        for lock in run_dir.glob(".fold*.lock"):
            fold = lock.name[len(".fold"):-len(".lock")]
            if fold.isdigit():
                check_free(fold_lock(run_dir, int(fold)), why)


def clean(root: Path = Path("."), everything: bool = False, keep: tuple[str, ...] = ()) -> list[Path]:
    """Delete `targets`; in a run folder, files named in `keep` stay (said, one line each). Returns what went."""
    paths = targets(root, everything)
    check_idle(paths)
    gone = []
    for p in paths:
        kept = [f for name in keep for f in [p / name] if p.is_dir() and f.is_file()]
        if kept:
            for child in p.iterdir():
                if child not in kept:
                    _remove(child)
            for f in kept:
                say(f"kept {f}: the record of the run's pushed kernels (a push after it was lost could restart a "
                    f"half-trained fold); delete it yourself once those kernels are done with")
        else:
            _remove(p)
        gone.append(p)
    say(f"removed {', '.join(str(p.relative_to(root)) for p in gone)}" if gone else "nothing to clean")
    return gone


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
