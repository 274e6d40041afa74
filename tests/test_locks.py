"""One writer a fold at a time (issue 45.4): a second train of a fold that is training, or a score / predict /
refiner that would read it, is one line naming the process that holds it, and changes nothing; another fold of the
same run trains meanwhile; a killed holder leaves no lock behind."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from competition.cli import main
from competition.runs.lock import fold_lock, held

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def tiny(run: Path, data: Path, fold: int, *more: str) -> list[str]:
    return ["train", "--run", str(run), "--fold", str(fold), "--data", str(data), "--preset", "tiny",
            *[x for k, v in TINY.items() for x in (f"--{k}", str(v))], *more]


@pytest.mark.parametrize("command", ["train", "score", "predict", "refiner"])
def test_a_fold_that_is_training_is_neither_trained_again_nor_read(command, tiny_run, synth_dir, tmp_path, capfd):
    args = {"train": tiny(tiny_run, synth_dir, 0, "--force"),
            "score": ["score", "--run", str(tiny_run), "--fold", "0", "--data", str(synth_dir)],
            "predict": ["predict", "--run", str(tiny_run), "--data", str(synth_dir), "--out", str(tmp_path / "s.csv")],
            "refiner": ["refiner", "--run", str(tiny_run), "--data", str(synth_dir), "--test-only"]}[command]
    with held(fold_lock(tiny_run, 0), "training fold 0"):
        before = files(tmp_path)
        code = main(args)
        after = files(tmp_path)
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tiny_run / 'fold0'} is being trained by process {os.getpid()} since " in err, err
    assert after == before  # nothing changed while the other process held it


def test_another_fold_of_the_run_trains_meanwhile(tiny_run, synth_dir, tiny_cache, capfd):
    with held(fold_lock(tiny_run, 0), "training fold 0"):
        assert main(["--quiet", *tiny(tiny_run, synth_dir, 1, "--cache", str(tiny_cache), "--epochs", "1")]) == 0
    assert (tiny_run / "fold1" / "train.json").is_file()


def test_a_killed_holder_leaves_no_lock(tiny_run, synth_dir, tmp_path):
    """The lock is the system's: SIGKILL (no `finally`, as Kaggle's 12-hour cap) releases it with the process."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from competition.runs.lock import fold_lock, held\n"
            f"with held(fold_lock(Path({str(tiny_run)!r}), 0), 'test'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["score", "--run", str(tiny_run), "--fold", "0", "--data", str(synth_dir), "--worst", "0"]) == 2
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert main(["--quiet", "score", "--run", str(tiny_run), "--fold", "0", "--data", str(synth_dir),
                 "--worst", "0"]) == 0
