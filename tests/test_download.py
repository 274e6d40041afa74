"""`make data` through the real kaggle package with only its HTTP transport faked (no network)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from competition import COMPETITION
from competition.kaggle import api as kaggle_api
from competition.kaggle.download import DEFAULT_FILES, download
from competition.data.layout import open_dataset
from competition.base.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
API = "https://api.kaggle.com/v1/competitions.CompetitionApiService/"
STORAGE = "https://storage.googleapis.com/kaggle-competitions-data/carvana/"
LAST_MODIFIED = formatdate(1_500_000_000, usegmt=True)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The backoff waits `call` asked for; nothing really sleeps."""
    waits: list[float] = []
    monkeypatch.setattr(kaggle_api, "_sleep", waits.append)
    return waits


@pytest.fixture
def credentials(no_credentials, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "dummy-user")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")


class FakeKaggle:
    """Kaggle's API and storage as seen by requests' transport: a dict of files and a queue of failures."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.failures: list[tuple[str, int | Exception]] = []  # (endpoint, status or exception), used in order
        self.always_fail: dict[str, int] = {}
        self.log: list[tuple[str, str, dict]] = []  # (method, url, headers)

    def send(self, adapter, request, **kwargs) -> requests.Response:
        self.log.append((request.method, request.url, dict(request.headers)))
        endpoint = request.url.split("?")[0].rsplit("/", 1)[-1]
        if endpoint in self.always_fail:
            return self._error(request, self.always_fail[endpoint])
        for i, (where, what) in enumerate(self.failures):
            if where == endpoint:
                del self.failures[i]
                if isinstance(what, Exception):
                    raise what
                return self._error(request, what)
        if request.url.startswith(API + "ListDataFiles"):
            body = {"files": [{"name": n, "totalBytes": len(b)} for n, b in sorted(self.files.items())]}
            return _response(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        if request.url.startswith(API + "DownloadDataFile"):
            name = json.loads(request.body)["fileName"]
            if name not in self.files:
                return self._error(request, 404)
            return _response(request, 302, b"", {"Location": f"{STORAGE}{name}?X-Goog-Signature=abc"})
        if request.url.startswith(STORAGE):
            data = self.files[endpoint]
            headers = {"Content-Type": "application/zip", "Last-Modified": LAST_MODIFIED, "ETag": f'"{endpoint}-v1"',
                       "Accept-Ranges": "bytes"}
            start = int(request.headers["Range"][len("bytes="):].rstrip("-")) if "Range" in request.headers else 0
            headers["Content-Length"] = str(len(data) - start)
            return _response(request, 206 if start else 200, data[start:], headers)
        if request.url.startswith(API + "StartSubmissionUpload"):
            return self._error(request, 503)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def _error(self, request, status: int) -> requests.Response:
        body = json.dumps({"code": status, "message": f"fake error {status}"}).encode()
        headers = {"Content-Type": "application/json"}
        if status == 429:
            headers["Retry-After"] = "7"
        return _response(request, status, body, headers)

    def downloads(self) -> list[str]:
        return [url.split("?")[0].rsplit("/", 1)[-1] for m, url, _ in self.log if url.startswith(STORAGE)]


def _response(request, status: int, body: bytes, headers: dict) -> requests.Response:
    r = requests.Response()
    r.status_code, r._content, r._content_consumed = status, body, True
    r.headers = CaseInsensitiveDict(headers)
    r.request, r.url, r.encoding, r.reason = request, request.url, "utf-8", "fake"
    return r


@pytest.fixture
def kaggle_files(synth_zip_dir) -> dict[str, bytes]:
    """Kaggle's files for the competition, as it lists them (CSVs as *.csv.zip), from the synthetic zips."""
    files = {p.name: p.read_bytes() for p in synth_zip_dir.iterdir() if p.name.endswith(".zip")}
    files["train.zip"] = b"low quality images: never fetched by default"
    return files


@pytest.fixture
def server(kaggle_files, credentials, sleeps, monkeypatch) -> FakeKaggle:
    fake = FakeKaggle(kaggle_files)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda self, req, **kw: fake.send(self, req, **kw))
    return fake


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# --- credentials ----------------------------------------------------------------------------------
def test_missing_credentials_is_one_line(no_credentials):
    with pytest.raises(UserError) as e:
        kaggle_api.get_api()
    line = _one_line(e)
    for hint in ("kaggle.json", str(no_credentials), "KAGGLE_CONFIG_DIR", "KAGGLE_USERNAME", "KAGGLE_KEY",
                 "KAGGLE_API_TOKEN", "kaggle auth login", "~/.kaggle/access_token"):
        assert hint in line
    assert kaggle_api.username() is None


def test_cli_download_without_credentials_exits_2(no_credentials, tmp_path):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "competition", "download", "--dest", str(tmp_path / "d")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Kaggle credentials") and "KAGGLE_KEY" in lines[0]


def test_kaggle_json_in_config_dir_is_used(no_credentials):
    (no_credentials / "kaggle.json").write_text(json.dumps({"username": "from-file", "key": "k"}))
    os.chmod(no_credentials / "kaggle.json", 0o600)
    assert kaggle_api.username() == "from-file"


# --- downloads ------------------------------------------------------------------------------------
def test_download_writes_the_default_files(server, kaggle_files, tmp_path, synth_zip_dir):
    dest = tmp_path / "carvana"
    paths = download(dest)
    expected = ["train_masks.csv.zip", "metadata.csv.zip", "sample_submission.csv.zip", "train_masks.zip",
                "train_hq.zip", "test_hq.zip"]
    assert [p.name for p in paths] == expected
    assert len(DEFAULT_FILES) == len(expected)
    for p in paths:
        assert p.read_bytes() == kaggle_files[p.name]
    assert sorted(server.downloads()) == sorted(expected)  # never train.zip
    assert not list(dest.glob("*.kaggle-partial"))
    ds, ref = open_dataset(dest), open_dataset(synth_zip_dir)
    assert ds.train_ids == ref.train_ids and ds.test_ids == ref.test_ids
    assert ds.read_train_image(ds.train_ids[0]) == ref.read_train_image(ref.train_ids[0])


def test_complete_files_are_skipped_without_asking_kaggle(server, tmp_path, monkeypatch):
    dest = tmp_path / "carvana"
    first = download(dest, files=["train_masks.zip", "metadata.csv"])
    server.log.clear()
    monkeypatch.delenv("KAGGLE_KEY")  # no credentials needed when there is nothing to fetch
    assert download(dest, files=["train_masks.zip", "metadata.csv"]) == first
    assert server.log == []


def test_partial_download_resumes_with_a_range_request(server, kaggle_files, tmp_path):
    dest = tmp_path / "carvana"
    data = kaggle_files["train_hq.zip"]
    dest.mkdir()
    (dest / "train_hq.zip").write_bytes(data[:1000])
    (dest / "train_hq.zip.kaggle-partial").write_text(json.dumps({"validator": '"train_hq.zip-v1"',
                                                                  "size": len(data)}))
    [path] = download(dest, files=["train_hq.zip"])
    assert path.read_bytes() == data
    assert any(h.get("Range") == "bytes=1000-" for _, url, h in server.log if url.startswith(STORAGE))
    assert not (dest / "train_hq.zip.kaggle-partial").exists()


def test_unknown_file_lists_the_real_ones(server, tmp_path):
    with pytest.raises(UserError) as e:
        download(tmp_path / "d", files=["train_hq.zipp"])
    assert "train_hq.zip" in _one_line(e) and server.downloads() == []


def test_not_enough_disk_is_refused_before_downloading(server, tmp_path, monkeypatch):
    import competition.kaggle.download as dl
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(UserError) as e:
        download(tmp_path / "d", files=["train_hq.zip"])
    assert "free" in _one_line(e) and server.downloads() == []


@pytest.mark.parametrize("status, hint", [
    (401, "KAGGLE_USERNAME"),
    (403, f"accept the competition rules at https://www.kaggle.com/competitions/{COMPETITION}/rules"),
    (404, COMPETITION),
])
def test_http_errors_are_one_line(server, tmp_path, sleeps, status, hint):
    server.always_fail["DownloadDataFile"] = status
    with pytest.raises(UserError) as e:
        download(tmp_path / "d", files=["train_masks.zip"])
    line = _one_line(e)
    assert f"HTTP {status}" in line and hint in line
    assert sleeps == []  # not retried
    assert not (tmp_path / "d" / "train_masks.zip").exists()


def test_429_and_5xx_and_dropped_connections_are_retried(server, kaggle_files, tmp_path, sleeps):
    server.failures = [("ListDataFiles", 429), ("DownloadDataFile", 503),
                       ("DownloadDataFile", requests.exceptions.ConnectionError("connection reset"))]
    [path] = download(tmp_path / "d", files=["train_masks.zip"])
    assert path.read_bytes() == kaggle_files["train_masks.zip"]
    assert sleeps == [7.0, 2.0, 4.0]  # Retry-After of the 429, then exponential backoff
    assert server.failures == []


def test_retries_exhausted_is_one_clear_line(server, tmp_path, sleeps):
    server.always_fail["DownloadDataFile"] = 502
    with pytest.raises(UserError) as e:
        download(tmp_path / "d", files=["train_masks.zip"])
    line = _one_line(e)
    assert "after 4 tries" in line and "HTTP 502" in line and "run the same command again" in line
    assert sleeps == [2.0, 4.0, 8.0]


def test_submit_is_not_retried(server, tmp_path, sleeps):
    sub = tmp_path / "submission.csv"
    sub.write_text("img,rle_mask\n")
    with pytest.raises(UserError) as e:
        kaggle_api.submit_file(sub, "test")
    assert "HTTP 503" in _one_line(e)
    assert sleeps == [] and sum("StartSubmissionUpload" in url for _, url, _ in server.log) == 1


def test_username_from_environment(credentials):
    assert kaggle_api.username() == "dummy-user"
