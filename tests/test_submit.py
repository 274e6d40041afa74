"""`make submit`: validate, then upload through the real kaggle package with only its HTTP transport faked."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from competition import COMPETITION
from competition.kaggle import api as kaggle_api
from competition.base.errors import UserError
from competition.kaggle.submit import submit

ROOT = Path(__file__).resolve().parents[1]
UPLOAD = "https://storage.example/upload/submission?token=abc"


def _response(request, status: int, body: dict | bytes, headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if isinstance(body, dict) else body
    r._content_consumed = True
    r.headers = CaseInsensitiveDict(headers or {"Content-Type": "application/json"})
    r.request, r.url, r.encoding, r.reason = request, request.url, "utf-8", "fake"
    return r


class FakeSubmissions:
    """Kaggle's submission endpoints and the upload URL, as requests' transport sees them."""

    def __init__(self):
        self.uploaded = b""
        self.requests: list[tuple[str, dict]] = []

    def send(self, adapter, request, **kwargs) -> requests.Response:
        endpoint = request.url.split("?")[0].rsplit("/", 1)[-1]
        if request.url.startswith(UPLOAD):
            body = request.body
            self.uploaded = body if isinstance(body, bytes) else b"".join(iter(lambda: body.read(1 << 16), b""))
            return _response(request, 200, {})
        payload = json.loads(request.body or b"{}")
        self.requests.append((endpoint, payload))
        if endpoint == "StartSubmissionUpload":
            return _response(request, 200, {"token": "blob-token-1", "createUrl": UPLOAD})
        if endpoint == "CreateSubmission":
            return _response(request, 200, {"message": "Successfully submitted", "ref": 42})
        raise AssertionError(f"unexpected request {request.method} {request.url}")


@pytest.fixture
def server(no_credentials, monkeypatch) -> FakeSubmissions:
    monkeypatch.setenv("KAGGLE_USERNAME", "dummy-user")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    fake = FakeSubmissions()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda self, req, **kw: fake.send(self, req, **kw))
    return fake


@pytest.fixture
def good_csv(tmp_path) -> tuple[Path, Path]:
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("img,rle_mask\na_01.jpg,1 1\nb_01.jpg,1 1\n")
    sub = tmp_path / "s.csv.gz"
    sub.write_bytes(gzip.compress(b"img,rle_mask\na_01.jpg,1 5 20 3\nb_01.jpg,\n"))
    return sub, sample


def test_submit_uploads_the_gzip_and_creates_the_submission(server, good_csv, capsys):
    sub, sample = good_csv
    submit(sub, "5 folds, hflip", sample, None)
    assert server.uploaded == sub.read_bytes(), "the gzip file itself is what gets uploaded"
    (start_ep, start), (create_ep, create) = server.requests
    assert start_ep == "StartSubmissionUpload" and start["competitionName"] == COMPETITION
    assert start["fileName"] == "s.csv.gz" and start["contentLength"] == sub.stat().st_size
    assert create_ep == "CreateSubmission" and create["blobFileTokens"] == "blob-token-1"
    assert create["submissionDescription"] == "5 folds, hflip"
    assert "submitted" in capsys.readouterr().out


def test_an_invalid_csv_is_never_uploaded(server, good_csv):
    sub, sample = good_csv
    sub.write_bytes(gzip.compress(b"img,rle_mask\na_01.jpg,1 5 3 2\n"))
    with pytest.raises(UserError, match="not a valid submission"):
        submit(sub, "x", sample, None)
    assert server.requests == [] and server.uploaded == b""


def test_without_credentials_the_csv_stays_and_one_line_says_so(no_credentials, good_csv):
    sub, sample = good_csv
    before = sub.read_bytes()
    r = subprocess.run([sys.executable, "-m", "competition", "submit", str(sub), "--sample", str(sample)],
                       capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    line = r.stderr
    assert "kaggle.json" in line and "nothing was submitted" in line and str(sub) in line
    assert sub.read_bytes() == before
