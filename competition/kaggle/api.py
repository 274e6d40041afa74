"""The one place that talks to the official `kaggle` package: credentials, HTTP errors, retries.

`import kaggle` authenticates at import time (printing help, or SystemExit, without credentials),
so it is imported lazily, inside `get_api()`, and never at module import.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from .. import COMPETITION
from ..base import console
from ..base.errors import UserError
from .state import STATE_FILE, read_state

T = TypeVar("T")


class UnknownKernel(UserError):
    """Kaggle knows no such kernel of yours: it answers 403 (kaggle 2.2.5 turns it into "Cannot access kernel ...")
    for a kernel it does not know as for one you may not see (kaggle-cli #951, #548)."""


class Unanswered(UserError):
    """Kaggle did not answer (network, 429, 5xx) after the retries: worth trying again later."""

RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api (Generate New Token)"
RETRIES = 3            # extra attempts after the first one, for 429/5xx/connection errors
BACKOFF_S = 2.0        # first wait; doubles each time
MAX_WAIT_S = 60.0
_sleep: Callable[[float], None] = time.sleep  # tests replace this so nothing really sleeps


def config_dir() -> Path:
    """Where kaggle.json is read from, by the package's own rule, evaluated now (not at import)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not home.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return home


def credentials_help() -> str:
    """One line: where credentials go (today's API token first; the legacy kaggle.json key still works)."""
    return (f"run `kaggle auth login`, or set KAGGLE_API_TOKEN to an API token from {TOKEN_URL} (or save it "
            f"as ~/.kaggle/access_token); the legacy key works too: kaggle.json in {config_dir()} (or the folder "
            f"named by KAGGLE_CONFIG_DIR), or KAGGLE_USERNAME and KAGGLE_KEY")


def _api_class() -> type:
    """The KaggleApi class; its import-time authentication prints help we don't want, so mute it."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except SystemExit as e:  # older releases exit on import without credentials
            raise UserError(f"no Kaggle credentials: {credentials_help()}") from e
    return KaggleApi


def get_api() -> Any:
    """An authenticated `KaggleApi`; missing credentials are a one-line UserError."""
    api = _api_class()()
    api.config_dir = str(config_dir())  # honour KAGGLE_CONFIG_DIR as it is now
    api.config = os.path.join(api.config_dir, api.config_file)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            call(api.authenticate, what="checking your Kaggle credentials")
    except SystemExit as e:  # the package's "no credentials" path: print_auth_help(); exit(1)
        raise UserError(f"no Kaggle credentials: {credentials_help()}") from e
    if "readable by other users" in out.getvalue():
        print(f"warning: {api.config} is readable by other users; run: chmod 600 {api.config}", file=sys.stderr)
    return api


def username() -> str | None:
    """The configured Kaggle user name, or None when there are no usable credentials."""
    try:
        return get_api().get_config_value("username") or None
    except UserError:
        return None


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _server_says(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _is_transient(e: BaseException) -> bool:
    """429, 5xx, dropped connections and timeouts: worth another try."""
    import requests
    import urllib3.exceptions
    status = _status(e)
    if isinstance(e, requests.exceptions.HTTPError) and status is not None:
        return status == 429 or status >= 500
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                      requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                      urllib3.exceptions.ReadTimeoutError)):
        return True
    # the package's own size check after a download cut short
    return isinstance(e, ValueError) and "does not match expected size" in str(e)


def _wait_s(e: BaseException, attempt: int) -> float:
    """Retry-After when a 429 gives one, else exponential backoff."""
    response = getattr(e, "response", None)
    retry_after = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    with contextlib.suppress(TypeError, ValueError):
        if retry_after is not None:
            return min(float(retry_after), MAX_WAIT_S)
    return min(BACKOFF_S * 2 ** attempt, MAX_WAIT_S)


def explain(e: BaseException, what: str) -> UserError | None:
    """The one-line UserError for a non-transient Kaggle failure, or None if it is not one."""
    import requests
    status = _status(e)
    if not isinstance(e, requests.exceptions.HTTPError) or status is None:
        return None
    says = _server_says(e)
    if status == 401:
        return UserError(f"Kaggle rejected your credentials (HTTP 401) while {what}: {credentials_help()}")
    if status == 403:
        return UserError(f"Kaggle refused access (HTTP 403: {says}) while {what}: accept the competition rules "
                         f"at {RULES_URL} first (same account as your credentials)")
    if status == 404:
        return UserError(f"not found on Kaggle (HTTP 404: {says}) while {what}: check the competition slug "
                         f"({COMPETITION}) and the file or kernel name")
    if 400 <= status < 500 and status != 429:
        return UserError(f"Kaggle refused the request (HTTP {status}: {says}) while {what}")
    return None


def call(fn: Callable[..., T], *args: Any, what: str, retry: bool = True, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` with Kaggle's HTTP errors, and the package's own refusals (its ValueErrors: metadata
    checks, a kernel it may not access), turned into one-line UserErrors; retries 429/5xx/network."""
    attempts = 1 + (RETRIES if retry else 0)
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into user errors below; others re-raised
            known = explain(e, what)
            if known is not None:
                raise known from e
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise UserError(f"disk full while {what}: free space there and run again "
                                f"(a partial download resumes)") from e
            if not _is_transient(e):
                if isinstance(e, ValueError) and str(e).startswith(("Cannot access kernel", "Cannot stream logs")):
                    raise UnknownKernel(f"Kaggle knows no such kernel of yours while {what} (it answers 403 for a "
                                        f"kernel it does not know, as for one you may not see)") from e
                if isinstance(e, ValueError):  # kaggle's own checks and refusals
                    raise UserError(f"Kaggle said no while {what}: {' '.join(str(e).split())}") from e
                raise
            if attempt + 1 < attempts:
                wait = _wait_s(e, attempt)
                print(f"Kaggle: {_describe(e)} while {what}; retrying in {wait:.0f} s "
                      f"({attempt + 1}/{attempts - 1})", file=sys.stderr, flush=True)
                _sleep(wait)
                continue
            tries = f"after {attempts} tries " if attempts > 1 else ""
            raise Unanswered(f"Kaggle did not answer {tries}while {what} ({_describe(e)}): check your connection "
                             f"and https://www.kaggle.com, then run the same command again") from e
    raise AssertionError("unreachable")


def _describe(e: BaseException) -> str:
    status = _status(e)
    return f"HTTP {status}" if status is not None else type(e).__name__


def submit_file(path: str | os.PathLike, message: str) -> str:
    """Upload a submission file to the competition; returns Kaggle's answer."""
    api = get_api()
    path = Path(path)
    # no automatic retry: a failure after the upload may already have counted against today's limit
    response = call(api.competition_submit, str(path), message, COMPETITION, quiet=console.QUIET,
                    what=f"submitting {path}", retry=False)
    answer = getattr(response, "message", "") or ""
    if answer == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", None):
        raise UserError(f"uploading {path} failed: check https://www.kaggle.com/competitions/{COMPETITION}"
                        f"/submissions before submitting again, then rerun")
    return answer


def submission_scores(api: Any) -> list[dict]:
    """Your submissions to the competition as Kaggle lists them (kaggle 2.2.5 competition_submissions, newest
    first): file name, description, date, status, public and private score (None until scored)."""
    found = call(api.competition_submissions, COMPETITION, page_size=100,
                 what="asking Kaggle for your submissions") or []
    return [{"file": s.file_name, "message": s.description or "", "date": str(s.date or ""),
             "status": status_name(s.status), "public": s.public_score or None, "private": s.private_score or None}
            for s in found if s is not None]


# --- kernels ------------------------------------------------------------------------------------------------------
def status_name(status: Any) -> str:
    """QUEUED | RUNNING | COMPLETE | ERROR | CANCEL_REQUESTED | ...: the enum's name."""
    return getattr(status, "name", None) or str(status).rsplit(".", 1)[-1].upper()


def session_status(api: Any, ref: str) -> tuple[str, str]:
    """A kernel's state (status_name) and Kaggle's failure message, on one line (ref: user/slug, or user/slug/N for
    version N). A kernel Kaggle does not know is UnknownKernel."""
    response = call(api.kernels_status, ref, what=f"asking Kaggle for the status of {ref}")
    return status_name(response.status), " ".join((response.failure_message or "").split())


def check_owner(api: Any, user: str, ref: str, what: str) -> None:
    """One line when the credentials are another user's than `user` (--user): a push, a checkpoint would act in the
    name of someone the credentials cannot act for."""
    owner = api.get_config_value("username")
    if owner and owner != user:
        raise UserError(f"{ref} is not yours: your Kaggle credentials are {owner}'s, and {what} would be {user}'s; "
                        f"work on your own kernels (--user {owner}, or no --user)")


def known_status(api: Any, ref: str) -> tuple[str, str] | None:
    """`session_status`, or None for a kernel Kaggle does not know (never pushed: its answer is 403)."""
    try:
        return session_status(api, ref)
    except UnknownKernel:
        return None


def quota(api: Any) -> dict:
    """This week's GPU quota (kaggle 2.2.5 quota_view): hours used, allowed, left, and when it refreshes."""
    response = call(api.quota_view, what="asking Kaggle for your GPU quota")
    gpu = response.gpu_quota
    used = gpu.time_used.total_seconds() / 3600 if gpu and gpu.time_used else 0.0
    total = gpu.total_time_allowed.total_seconds() / 3600 if gpu and gpu.total_time_allowed else 0.0
    refresh = response.quota_refresh_time
    return {"used_h": used, "total_h": total, "left_h": max(0.0, total - used),
            "refresh": refresh.strftime("%Y-%m-%d %H:%M UTC") if refresh else "?"}


def log_lines(api: Any, ref: str) -> Any:
    """A kernel's log, line by line as it comes: followed while the session runs, the whole log once it ended
    (kaggle 2.2.5 kernels_logs_stream)."""
    events = call(api.kernels_logs_stream, ref, what=f"reading the log of {ref}")
    try:
        for event in events:
            yield str(event.get("data", ""))
    except Exception as e:  # noqa: BLE001 - the stream's own errors, sorted as any call's
        call(_raise, e, what=f"reading the log of {ref}", retry=False)


def _raise(e: BaseException) -> None:
    raise e


def kernel_state(api: Any, ref: str, missing_ok: bool = False) -> dict | None:
    """The kernel's own record of how far it got (STATE_FILE in its output; ref user/slug/N: version N's), or None
    when it has none (missing_ok: nor when Kaggle knows no such kernel yet)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            call(api.kernels_output, ref, tmp, file_pattern=rf"^{re.escape(STATE_FILE)}$",
                 what=f"reading {STATE_FILE} of {ref}")
        except UnknownKernel:
            if missing_ok:
                return None
            raise
        path = Path(tmp) / STATE_FILE
        return read_state(path, f"its kernel wrote another {STATE_FILE} than this toolkit's: push it again with "
                                f"this toolkit, or --fresh") if path.is_file() else None
