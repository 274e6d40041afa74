"""`runs`: one row per run, the submissions made from it, Kaggle's scores through the real kaggle package (its HTTP
transport faked as Kaggle answers), and `submit` recording what it sent."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import requests

from competition.cli import main
from competition.kaggle.leaderboard import run_rows

from test_submit import UPLOAD, _response


class FakeKaggle:
    """Kaggle's submission endpoints: the upload, and the list of this user's submissions with their scores."""

    def __init__(self, scored: list[dict]):
        self.scored, self.endpoints = scored, []

    def send(self, request) -> requests.Response:
        if request.url.startswith(UPLOAD):
            return _response(request, 200, {})
        endpoint = request.url.split("?")[0].rsplit("/", 1)[-1]
        self.endpoints.append(endpoint)
        if endpoint == "ListSubmissions":
            return _response(request, 200, {"submissions": self.scored, "nextPageToken": ""})
        if endpoint == "StartSubmissionUpload":
            return _response(request, 200, {"token": "blob-token-1", "createUrl": UPLOAD})
        if endpoint == "CreateSubmission":
            return _response(request, 200, {"message": "Successfully submitted", "ref": 7})
        return _response(request, 403, {"code": 403, "message": "Permission denied"})


def _serve(monkeypatch, scored: list[dict]) -> FakeKaggle:
    monkeypatch.setenv("KAGGLE_USERNAME", "dummy-user")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    fake = FakeKaggle(scored)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda self, req, **kw: fake.send(req))
    return fake


@pytest.fixture
def scored_run(tiny_run, tmp_path) -> tuple[Path, Path]:
    """runs/tiny with an out-of-fold table, and submissions/ holding two sent files: one made by it, one by a run
    that is not here."""
    (tiny_run / "scores.csv").write_text("image_id,dice\na_01,0.99\nb_01,0.97\n")
    subs = tmp_path / "submissions"
    subs.mkdir()
    sent = [{"file": "tiny.csv.gz", "message": "tiny fold 0", "at": "2026-12-01T10:00:00Z",
             "made": {"run": str(tiny_run)}},
            {"file": "old.csv.gz", "message": "an old one", "at": "2026-11-30T09:00:00Z", "made": None}]
    (subs / "submitted.json").write_text(json.dumps({"submissions": sent}))
    return tiny_run, subs


def test_a_row_per_run_with_its_preset_folds_dice_and_time(scored_run):
    run, _ = scored_run
    (row,) = run_rows(run.parent)
    assert row["run"] == "tiny" and row["preset"] == "tiny" and row["folds"] == "1/3"
    assert row["dice"] == "0.98000 out of fold (2 photos)"
    seconds = pd.read_csv(run / "fold0" / "history.csv")["seconds"].sum()
    assert row["minutes"] == pytest.approx(seconds / 60)


def test_runs_shows_kaggles_scores_under_the_run_that_made_each_file(scored_run, no_credentials, monkeypatch,
                                                                     capsys):
    run, subs = scored_run
    fake = _serve(monkeypatch, [
        {"ref": 2, "fileName": "tiny.csv.gz", "description": "tiny fold 0", "status": "COMPLETE",
         "publicScore": "0.99512", "privateScore": "0.99498", "date": "2026-12-01T10:00:05Z"},
        {"ref": 1, "fileName": "old.csv.gz", "description": "an old one", "status": "PENDING",
         "date": "2026-11-30T09:00:05Z"}])
    assert main(["runs", "--runs", str(run.parent), "--submissions", str(subs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert fake.endpoints == ["ListSubmissions"]
    at = next(i for i, line in enumerate(lines) if line.startswith("| tiny | tiny | 1/3 |"))
    assert "tiny.csv.gz" in lines[at + 1] and "public 0.99512 / private 0.99498" in lines[at + 1]
    assert lines[at + 2].startswith("| (unknown run) |") and "pending" in lines[at + 2]


def test_without_credentials_the_table_stands_and_says_why(scored_run, no_credentials, capsys):
    run, subs = scored_run
    before = {p: p.read_bytes() for p in subs.iterdir()}
    assert main(["runs", "--runs", str(run.parent), "--submissions", str(subs)]) == 0
    out = capsys.readouterr().out
    assert "| tiny | tiny | 1/3 | 0.98000 out of fold (2 photos) |" in out
    assert out.count("| not fetched |") == 2 and "Kaggle's scores were not fetched: " in out
    assert {p: p.read_bytes() for p in subs.iterdir()} == before  # runs writes nothing


def test_runs_with_nothing_to_show_is_one_line(tmp_path, capfd):
    assert main(["runs", "--runs", str(tmp_path / "none"), "--submissions", str(tmp_path / "nor")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no runs under" in err


def test_a_damaged_record_of_submissions_is_one_line(scored_run, capfd):
    run, subs = scored_run
    (subs / "submitted.json").write_text('{"file": 1}')
    assert main(["runs", "--runs", str(run.parent), "--submissions", str(subs), "--offline"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "submitted.json" in err


def test_submit_records_the_file_its_digest_and_the_run_that_made_it(tmp_path, no_credentials, monkeypatch):
    fake = _serve(monkeypatch, [])
    subs = tmp_path / "submissions"
    subs.mkdir()
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("img,rle_mask\na_01.jpg,1 1\n")
    sub = subs / "s.csv.gz"
    sub.write_bytes(gzip.compress(b"img,rle_mask\na_01.jpg,1 5 20 3\n"))
    from competition.kaggle.submit import read_submitted, submit
    submit(sub, "first", sample, None)
    submit(sub, "second", sample, None)
    first, second = read_submitted(subs)
    assert fake.endpoints.count("CreateSubmission") == 2
    assert (first["file"], first["message"], second["message"]) == ("s.csv.gz", "first", "second")
    assert first["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest() and first["made"] is None
