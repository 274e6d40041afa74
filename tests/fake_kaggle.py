"""A fake Kaggle behind requests' transport (HTTPAdapter.send): the real `kaggle` package runs, only its HTTP is
answered here. Kernels (push with its versions, status, output by version, logs, the GPU quota) and private datasets
(status, blob uploads, create, version), as kaggle 2.2.5 / kagglesdk send them, and as Kaggle answers: a kernel or
dataset it does not know is 403 (kaggle-cli #951; Kaggle staff in #548: "403 can also mean not found"), which
kaggle 2.2.5 turns into a ValueError for kernels. Shared by test_kernels, test_kernel_queue and
test_kernel_checkpoint."""
from __future__ import annotations

import json
from email.utils import formatdate

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from competition.kaggle import api as kaggle_api

API = "https://api.kaggle.com/v1/kernels.KernelsApiService/"
LOGS = "https://api.kaggle.com/v1/kernels/logs/stream/"
DATASETS = "https://api.kaggle.com/v1/datasets.DatasetApiService/"
BLOBS = "https://api.kaggle.com/v1/blobs.BlobApiService/"
STORAGE = "https://storage.googleapis.com/kaggle-kernel-output/"
UPLOADS = "https://storage.googleapis.com/fake-upload/"  # the createUrl StartBlobUpload hands out
USER = "dummy-user"


def _response(request, status: int, body: bytes, headers: dict) -> requests.Response:
    r = requests.Response()
    r.status_code, r._content, r._content_consumed = status, body, True
    r.headers = CaseInsensitiveDict(headers)
    r.request, r.url, r.encoding, r.reason = request, request.url, "utf-8", "fake"
    return r


def _json(request, status: int, body: dict) -> requests.Response:
    return _response(request, status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _body(request) -> dict:
    """A JSON request's body; an upload's file bytes are read by the upload branch instead."""
    if not request.body or request.method == "PUT":
        return {}
    return json.loads(request.body)


class FakeKernels:
    """Kaggle's API as requests' transport sees it: records requests, answers from its fields."""

    def __init__(self):
        self.sent: list[tuple[str, dict]] = []  # (endpoint, JSON body)
        self.versions: dict[str, int] = {}  # kernel slug -> versions pushed (a slug not here: Kaggle answers 403)
        self.outputs_by_version: dict[tuple[str, int], dict[str, bytes]] = {}  # (slug, version) -> its output
        self.known: set[str] = set()  # kernels pushed before this test (by another machine): known, no versions here
        self.quota: dict = {"timeUsed": "36000s", "totalTimeAllowed": "108000s"}  # 10 of 30 hours
        self.log: list[dict] = [{"stream_name": "stdout", "time": 1.0, "data": "log line\n"}]
        self.save_answer: dict = {"ref": "", "url": "", "versionNumber": 1}
        self.status_answer: dict = {"status": "COMPLETE"}
        self.statuses: dict[str, dict] = {}  # per kernel slug, else status_answer
        self.fail: dict[str, int] = {}
        self.outputs: dict[str, bytes] = {}
        self.datasets: dict[str, list[dict]] = {}  # "owner/slug" -> its versions' files {name: bytes}
        self.dataset_status: str = "READY"  # GetDatasetStatus of a dataset that exists
        self.dataset_answer: dict = {}  # merged into CreateDataset / CreateDatasetVersion answers
        self.uploads: dict[str, tuple[str, bytes]] = {}  # blob token -> (file name, bytes)
        self.downloaded: list[str] = []  # every output file fetched, by name
        self.urls: list[str] = []  # every request's URL, query included

    def send(self, adapter, request, **kwargs) -> requests.Response:
        url = request.url.split("?")[0]
        endpoint = url.rsplit("/", 1)[-1]
        self.urls.append(request.url)
        self.sent.append((endpoint, _body(request)))
        if endpoint in self.fail:
            code = self.fail[endpoint]
            return _json(request, code, {"code": code, "message": f"fake error {code}"})
        if url == API + "SaveKernel":
            body = self.sent[-1][1]
            slug = body["slug"].rsplit("/", 1)[-1]
            answer = {"ref": f"/code/{body['slug']}", "url": f"https://www.kaggle.com/code/{body['slug']}"}
            if not self.save_answer.get("error"):
                self.versions[slug] = self.versions.get(slug, 0) + 1
                answer["versionNumber"] = self.versions[slug]
            return _json(request, 200, {**answer, **{k: v for k, v in self.save_answer.items()
                                                     if k != "versionNumber" or "error" in self.save_answer}})
        if url == API + "GetAcceleratorQuotaStatistics":
            return _json(request, 200, {"gpuQuota": self.quota, "quotaRefreshTime": "2026-12-12T00:00:00Z"})
        slug = self.sent[-1][1].get("kernelSlug")
        if url in (API + "GetKernelSessionStatus", API + "ListKernelSessionOutput") and not self.is_known(slug):
            return _json(request, 403, {"code": 403, "message": "Permission 'kernels.get' was denied"})
        if url == API + "GetKernelSessionStatus":
            return _json(request, 200, self.statuses.get(slug, self.status_answer))
        if url == API + "ListKernelSessionOutput":
            label = self.sent[-1][1].get("versionLabel")
            outputs = self.outputs_by_version.get((slug, int(label[1:])), {}) if label else self.outputs
            self.serving = outputs
            files = [{"fileName": n, "url": STORAGE + n} for n in sorted(outputs)]
            return _json(request, 200, {"files": files, "log": json.dumps(self.log)})
        if url.startswith(LOGS):
            slug = url[len(LOGS):].split("/")[1]
            if not self.is_known(slug):
                return _json(request, 403, {"code": 403, "message": "Permission 'kernels.get' was denied"})
            if self.statuses.get(slug, self.status_answer).get("status") in ("RUNNING", "QUEUED"):  # live: SSE
                events = "".join(f"data: {json.dumps(e)}\n\n" for e in self.log) + "data: END_OF_LOG\n\n"
                return _response(request, 200, events.encode(), {"Content-Type": "text/event-stream"})
            return _response(request, 200, json.dumps(self.log).encode(), {"Content-Type": "application/json"})
        if url.startswith(STORAGE):
            self.downloaded.append(url[len(STORAGE):])
            data = getattr(self, "serving", self.outputs)[url[len(STORAGE):]]
            return _response(request, 200, data, {"Content-Type": "application/octet-stream",
                                                  "Content-Length": str(len(data)),
                                                  "Last-Modified": formatdate(1_500_000_000, usegmt=True)})
        if url.startswith((DATASETS, BLOBS, UPLOADS)):
            return self._datasets(request, url, self.sent[-1][1])
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def _datasets(self, request, url: str, body: dict) -> requests.Response:
        """GetDatasetStatus, StartBlobUpload, the PUT of the file to its createUrl, CreateDataset(Version)."""
        if url == DATASETS + "GetDatasetStatus":
            if f"{body['ownerSlug']}/{body['datasetSlug']}" not in self.datasets:
                return _json(request, 403, {"code": 403, "message": "Permission 'datasets.get' was denied"})
            return _json(request, 200, {"status": self.dataset_status})
        if url == BLOBS + "StartBlobUpload":
            token = f"token-{len(self.uploads)}"
            self.uploads[token] = (body["name"], b"")
            return _json(request, 200, {"token": token, "createUrl": UPLOADS + token})
        if url.startswith(UPLOADS) and request.method == "PUT":
            token = url[len(UPLOADS):]
            data = request.body if isinstance(request.body, bytes) else request.body.read()
            self.uploads[token] = (self.uploads[token][0], data)
            return _response(request, 200, b"", {})
        if url in (DATASETS + "CreateDataset", DATASETS + "CreateDatasetVersion"):
            new = url.endswith("CreateDataset")
            ref = (f"{body['ownerSlug']}/{body['slug']}" if new
                   else f"{body['ownerSlug']}/{body['datasetSlug']}")
            files = (body if new else body["body"])["files"]
            if self.dataset_answer.get("error"):
                return _json(request, 200, {"status": "error", **self.dataset_answer})
            self.datasets.setdefault(ref, []).append(dict(self.uploads[f["token"]] for f in files))
            return _json(request, 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok",
                                        **self.dataset_answer})
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def is_known(self, slug: str | None) -> bool:
        """Whether Kaggle knows this kernel: pushed in this test, or before it (`known`)."""
        return slug in self.versions or slug in self.known

    def body(self, endpoint: str) -> dict:
        [body] = self.bodies(endpoint)
        return body

    def bodies(self, endpoint: str) -> list[dict]:
        """Every request sent to `endpoint`, in order."""
        return [b for e, b in self.sent if e == endpoint]


@pytest.fixture
def server(no_credentials, monkeypatch, tmp_path_factory) -> FakeKernels:
    monkeypatch.chdir(no_credentials.parent)  # runs/<run>/kernels.json lands in the test's folder
    monkeypatch.delenv("KAGGLE_SESSION_HOURS", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    monkeypatch.setattr(kaggle_api, "_sleep", lambda s: None)
    # the package keeps resumable-upload state in the system temp folder: the test's own, not the machine's
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path_factory.mktemp("systemp")))
    fake = FakeKernels()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda self, req, **kw: fake.send(self, req, **kw))
    return fake
