"""A fork server for the tests' child processes that import TensorFlow anyway.

Importing TensorFlow and Keras takes ~5 s of a CPU core, and the suite starts about a hundred processes that
train or predict (the CLI, killable training runs, the Kaggle entry scripts). `run` starts each of them as a
fork of one waiting process per test worker that has imported TensorFlow and Keras but run nothing (no thread
pool, no device, no op yet: forking is safe then), so the child starts where a fresh interpreter would be after
`import tensorflow, keras`. Everything else is a real process: its own pid, environment, working directory, argv,
sys.path and exit status; a child that kills itself, exits by sys.exit or dies by a signal is seen exactly as
subprocess sees one. Not for a test that asserts what a command imports (TensorFlow is already there): use
subprocess for those.

Environment variables that TensorFlow or Keras read while being imported (TF_CPP_MIN_LOG_LEVEL, KERAS_HOME,
KERAS_BACKEND) keep the server's values; the server is started with the suite's (tests/conftest.py).
TF_DETERMINISTIC_OPS is read at the first op, in the child.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_ENTRY = "FORKSERVER_SERVE"


# --- the server: imports TensorFlow, then forks one child per request ------------------------------------
def _serve(fds: str) -> int | None:
    """Read requests (one JSON line each) on the first of `fds` ("r,w"), fork a child for each, answer its pid
    and then its exit status on the second. In a child it runs the request and returns None (exit status 0
    unless the command raised SystemExit or an exception, which propagate as in any interpreter)."""
    r, w = (int(fd) for fd in fds.split(","))
    requests, answers = os.fdopen(r, "r"), os.fdopen(w, "w", buffering=1)
    base_path = [p for p in sys.path if p and Path(p).resolve() != Path(__file__).resolve().parent]
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    answers.write("ready\n")
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            return _child(request, base_path)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
    return 0


def _child(request: dict, base_path: list[str]) -> None:
    """Become the requested process: its streams, folder, environment, sys.path and argv; then run it. Python's and
    numpy's global random states are drawn afresh, as a new interpreter's are (a fork would share the server's, so
    two children could not show unseeded randomness); the hash seed cannot be: a test that must see a fresh one
    (tests/test_reliability.py's fresh-process resume) starts a real interpreter."""
    import random
    import runpy

    import numpy as np
    random.seed()
    np.random.seed()
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                           (2, request["stderr"], os.O_WRONLY)):
        new = os.open(path, mode)
        os.dup2(new, fd)
        os.close(new)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    argv = request["argv"]
    if argv[0] == "-m":
        sys.path[:] = [os.getcwd(), *extra, *base_path]
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.path[:] = ["", *extra, *base_path]
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        script = os.path.abspath(argv[0])
        sys.path[:] = [os.path.dirname(script), *extra, *base_path]
        sys.argv = [argv[0], *argv[1:]]
        runpy.run_path(script, run_name="__main__")


# --- the client: one server per test process, started on first use --------------------------------------
class _Server:
    def __init__(self) -> None:
        requests_r, self._requests = os.pipe()
        self._answers, answers_w = os.pipe()
        env = {**os.environ, _ENTRY: f"{requests_r},{answers_w}"}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([sys.executable, __file__], cwd=tempfile.gettempdir(), env=env,
                                     pass_fds=(requests_r, answers_w), stdin=subprocess.DEVNULL)
        os.close(requests_r)
        os.close(answers_w)
        self._out = os.fdopen(self._requests, "w", buffering=1)
        self._in = os.fdopen(self._answers, "r")
        self.lock = threading.Lock()
        if self._in.readline().strip() != "ready":
            raise RuntimeError(f"the fork server did not start (exit status {self.proc.wait()})")

    def run(self, argv: list[str], env: dict, cwd: str, stdout: str, stderr: str,
            timeout: float) -> tuple[int, bool]:
        """(exit status, timed out) of one child."""
        self._out.write(json.dumps({"argv": argv, "env": env, "cwd": cwd, "stdout": stdout, "stderr": stderr}) + "\n")
        pid = json.loads(self._in.readline())["pid"]
        fired: list[bool] = []
        timer = threading.Timer(timeout, lambda: (fired.append(True), os.kill(pid, 9)))
        timer.start()
        try:
            status = json.loads(self._in.readline())["status"]
        finally:
            timer.cancel()
        return status, bool(fired)

    def close(self) -> None:
        self._out.close()
        self.proc.wait(timeout=30)


_server: _Server | None = None


def _get() -> _Server:
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    return _server


def run(args: list[str], *, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 600,
        check: bool = False) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, ...) for `args` = [sys.executable, <script> | -m
    module | -c code, *arguments], run as a fork of the waiting server."""
    if args[0] != sys.executable:
        raise ValueError(f"forkserver runs Python only, not {args[0]}")
    with tempfile.TemporaryDirectory(prefix="forked-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        out.touch()
        err.touch()
        server = _get()
        with server.lock:
            status, timed_out = server.run([str(a) for a in args[1:]], dict(os.environ if env is None else env),
                                   str(Path(cwd or os.getcwd()).resolve()), str(out), str(err), timeout)
        result = subprocess.CompletedProcess(args, status, out.read_text(errors="replace"),
                                             err.read_text(errors="replace"))
    if timed_out:
        raise subprocess.TimeoutExpired(args, timeout, result.stdout, result.stderr)
    if check:
        result.check_returncode()
    return result


if __name__ == "__main__" and os.environ.get(_ENTRY):
    sys.exit(_serve(os.environ.pop(_ENTRY)))
