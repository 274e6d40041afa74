"""Runs trained before the one-way redesign (issue 34) still predict and score exactly as they did then.

tests/fixtures/pre-redesign/ holds two tiny runs trained on the synthetic set below by the code of ea8a0ca
(run `a`, 32x48, with a refiner net learnt from its training photos; run `b`, 48x64), and what that code
made from them: four submissions (no refinement, the guided filter, the refiner net, a blend a + 2 x b) and
the fold-0 scores of `a` and of the blend, and a prediction it began and was interrupted in (partial/). The
submissions must be byte-identical today, the scores equal (to 1e-5: `_close`), and the partial prediction must resume.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from competition.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "pre-redesign"
EXPECTED = FIXTURE / "expected"


def _fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    """A copy of the old runs and the synthetic set they were trained on, in one folder."""
    from competition.data.synth import SynthSpec, generate
    root = tmp_path_factory.mktemp("pre-redesign")
    shutil.copytree(FIXTURE / "runs", root / "runs")
    refiner = root / "runs" / "a" / "refiner"
    shutil.copyfile(refiner / "fold0.keras", refiner / "all.keras")  # the refiner command made it as a copy
    generate(root / "data", SynthSpec(cars=3, test=4, seed=7))
    expected = json.loads((EXPECTED / "scores.json").read_text())["data_sha256"]
    assert _fingerprint(root / "data") == expected, (
        "the synthetic set differs from the one the old runs were made on (synth.py or OpenCV's JPEG encoder "
        "changed), so their outputs cannot be compared")
    return root


def _cli(root: Path, *args: str) -> None:
    assert main(["--quiet", *args]) == 0


@pytest.mark.parametrize("refine", ["none", "guided", "net"])
def test_old_run_predicts_byte_identical_submission(old, refine):
    out = old / "out" / f"a-{refine}.csv"
    _cli(old, "predict", "--run", str(old / "runs" / "a"), "--data", str(old / "data"), "--tta", "hflip",
         "--refine", refine, "--out", str(out))
    assert out.read_bytes() == (EXPECTED / f"a-{refine}.csv").read_bytes()


def test_old_runs_blend_predicts_byte_identical_submission(old):
    out = old / "out" / "blend.csv"
    _cli(old, "predict", "--run", str(old / "runs" / "a"), "--run", str(old / "runs" / "b") + ":2",
         "--data", str(old / "data"), "--tta", "hflip", "--refine", "guided", "--out", str(out))
    assert out.read_bytes() == (EXPECTED / "blend.csv").read_bytes()


def _close(got, want, where: str = "score") -> None:
    """`got` equals `want`, floats to 1e-5: OpenCV's float kernels differ by CPU (AVX-512 on one machine, AVX2 on
    another) in the last bits, which can move an 8-bit native value at a threshold other than the one the masks
    were cut at (the submissions above stay byte-identical)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for n, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{where}[{n}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=0, abs=1e-5), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _scored(path: Path, keys: dict) -> dict:
    got = json.loads(path.read_text())
    picked = {k: got[k] for k in keys if k != "members"}
    if "members" in keys:
        picked["members"] = [{k: m[k] for k in ("dice_mean", "dice_std", "weight")} for m in got["members"]]
    return picked


def test_old_run_scores_as_before(old):
    _cli(old, "score", "--run", str(old / "runs" / "a"), "--fold", "0", "--data", str(old / "data"),
         "--tta", "hflip", "--refine", "net")
    want = json.loads((EXPECTED / "scores.json").read_text())["a"]
    _close(_scored(old / "runs" / "a" / "fold0" / "score.json", want), want)


def test_old_runs_blend_scores_as_before(old, monkeypatch):
    """With the guided filter the old code had: issue 36 made the filter 4x faster, moving the blend's threshold
    curve by 6e-7 here (test_refine checks the new filter against the old one); this test is about the layout."""
    from competition.bench.refinement import baseline_refined_native_u8
    from competition.inference import predictor
    monkeypatch.setattr(predictor, "refined_native_u8",
                        lambda prob, geometry, guide, refiner=None: baseline_refined_native_u8(prob, geometry, guide))
    _cli(old, "score", "--run", str(old / "runs" / "a"), "--run", str(old / "runs" / "b") + ":2", "--fold", "0",
         "--data", str(old / "data"), "--tta", "hflip", "--refine", "guided")
    want = json.loads((EXPECTED / "scores.json").read_text())["blend"]
    _close(_scored(old / "runs" / "blends" / "a+bx2" / "fold0" / "score.json", want), want)


def test_old_partial_prediction_resumes_into_the_same_submission(old, monkeypatch):
    """A prediction the old code began (2 of 4 rows, refined by the net, in chunks of 2) and was interrupted in:
    today's predict takes its record as its own, predicts only the 2 rows left, and the file is the same."""
    from competition.inference import predict as predict_mod
    from competition.inference import writer
    out = old / "resumed" / "a-net.csv"
    out.parent.mkdir()
    shutil.copyfile(FIXTURE / "partial" / "a-net.csv.part", out.with_name("a-net.csv.part"))
    record = json.loads((FIXTURE / "partial" / "a-net.csv.part.json").read_text())
    record["meta"]["run"] = str(old / "runs" / "a")  # resumed where it was begun: the run's folder is its path
    out.with_name("a-net.csv.part.json").write_text(json.dumps(record))
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    real, calls = predict_mod.to_native, []
    monkeypatch.setattr(predict_mod, "to_native", lambda *a: calls.append(1) or real(*a))
    _cli(old, "predict", "--run", str(old / "runs" / "a"), "--data", str(old / "data"), "--tta", "hflip",
         "--refine", "net", "--out", str(out))
    assert len(calls) == 2  # the 2 rows the old code had not written
    assert out.read_bytes() == (EXPECTED / "a-net.csv").read_bytes()
