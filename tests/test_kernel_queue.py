"""Every fold of a run, two Kaggle sessions at a time: the queue in runs/<run>/kernels.json, pushed through the
real kaggle package with only its HTTP transport faked (test_kernels' fake Kaggle), polled without sleeping."""
from __future__ import annotations

import json

import pytest

from competition.kaggle import state as kstate
from competition.kaggle import queue as kernel_queue
from competition.base.errors import UserError
from competition.kaggle.spec import KernelSpec
from test_kernels import USER, server  # noqa: F401 - the fake Kaggle fixture

SPEC = KernelSpec(preset="unet", name="q1")  # unet: 5 folds


def _pushed(fake) -> list[str]:
    return [body["slug"].rsplit("-", 1)[-1] for endpoint, body in fake.sent if endpoint == "SaveKernel"]


def _queue_file(tmp_path):
    return json.loads((tmp_path / "runs" / "q1" / "kernels.json").read_text())


def test_push_all_pushes_two_folds_and_queues_the_rest(server, tmp_path):
    states = kernel_queue.push_all(SPEC, out_root=tmp_path / "build")
    assert _pushed(server) == ["0", "1"]
    assert states == {0: "PUSHED", 1: "PUSHED", 2: "WAITING", 3: "WAITING", 4: "WAITING"}
    record = _queue_file(tmp_path)
    assert record["queue"]["folds"] == [0, 1, 2, 3, 4] and record["queue"]["max_running"] == 2
    assert sorted(record["kernels"]) == ["carvana-q1-fold-0", "carvana-q1-fold-1"]


def test_the_queue_pushes_the_next_fold_when_one_ends_and_survives_a_restart(server, tmp_path, capsys):
    kernel_queue.push_all(SPEC, out_root=tmp_path / "build")
    running = {"status": "RUNNING"}
    server.statuses = {f"carvana-q1-fold-{k}": running for k in range(5)}
    # one pass, no room: nothing pushed; the host process is then stopped (max_polls) and started again
    assert kernel_queue.run_queue("q1", tmp_path / "build", sleep=pytest.fail, max_polls=1)[2] == "WAITING"
    assert _pushed(server) == ["0", "1"]

    waits = []

    def sleep(seconds):  # time passes on Kaggle: fold 0 finishes, then everything else does
        waits.append(seconds)
        if len(waits) == 1:
            server.statuses["carvana-q1-fold-0"] = {"status": "COMPLETE"}
        else:
            server.statuses = {}  # every kernel COMPLETE
    states = kernel_queue.run_queue("q1", tmp_path / "build", sleep=sleep, backoff=(5.0, 2.0, 7.0))
    assert states == {k: "COMPLETE" for k in range(5)}
    assert _pushed(server) == ["0", "1", "2", "3", "4"]
    assert waits[0] == 5.0 and max(waits) <= 7.0
    assert "every fold of q1 is COMPLETE" in capsys.readouterr().out


def test_a_refused_push_is_retried_on_a_later_pass_not_fatal(server, tmp_path, capsys):
    kernel_queue.push_all(SPEC, out_root=tmp_path / "build")
    server.statuses = {"carvana-q1-fold-1": {"status": "RUNNING"}}  # fold 0 done, a slot free
    server.save_answer = {"error": "Maximum batch GPU session count of 2 reached."}
    states = kernel_queue.step("q1", tmp_path / "build")
    assert states[2] == "WAITING" and "fold 2: push deferred (" in capsys.readouterr().out
    assert "carvana-q1-fold-2" not in _queue_file(tmp_path)["kernels"]  # nothing recorded for the refused push
    server.save_answer = {"versionNumber": 1}
    assert kernel_queue.step("q1", tmp_path / "build")[2] == "PUSHED"
    assert _pushed(server)[-2:] == ["2", "2"]


def test_a_fold_stopped_at_its_time_limit_is_pushed_again_and_resumes(server, tmp_path):
    kernel_queue.push_all(KernelSpec(preset="tiny", name="q1"), out_root=tmp_path / "build")  # tiny: 2 folds
    state = kstate.state_record("time-limited", "fold 0 after epoch 4",
                                   {"name": "q1", "task": "train", "fold": 0, "kernel": f"{USER}/carvana-q1-fold-0",
                                    "push": 1}, {"epochs": 4})
    server.outputs = {kstate.STATE_FILE: json.dumps(state).encode()}
    server.statuses = {"carvana-q1-fold-1": {"status": "RUNNING"}}
    # Kaggle has not saved the backup yet: pushing now would mount an output without it
    assert kernel_queue.step("q1", tmp_path / "build") == {0: "SAVING", 1: "RUNNING"}
    assert _pushed(server) == ["0", "1"]
    server.outputs["fold0/backup/state.json"] = b"{}"
    states = kernel_queue.step("q1", tmp_path / "build")
    assert states == {0: "PUSHED", 1: "RUNNING"}
    text = [body["text"] for endpoint, body in server.sent if endpoint == "SaveKernel"][-1]
    assert "'push': 2" in text and "'expect': {'push': 1, 'state': 'time-limited', 'progress': {'epochs': 4}}" in text


def test_a_queue_left_with_failed_folds_stops_with_one_line(server, tmp_path):
    kernel_queue.push_all(KernelSpec(preset="tiny", name="q1"), out_root=tmp_path / "build")
    server.statuses = {"carvana-q1-fold-1": {"status": "ERROR", "failureMessage": "out of memory"}}
    with pytest.raises(UserError) as e:
        kernel_queue.run_queue("q1", tmp_path / "build", sleep=pytest.fail)
    assert "folds [1] ended without finishing" in str(e.value) and "\n" not in str(e.value)


def test_status_of_a_run_is_one_table_of_every_fold(server, tmp_path, capsys):
    kernel_queue.push_all(SPEC, out_root=tmp_path / "build")
    server.statuses = {"carvana-q1-fold-1": {"status": "ERROR", "failureMessage": "out of memory"}}
    capsys.readouterr()
    rows = kernel_queue.status_table("q1")
    assert [(r["fold"], r["state"]) for r in rows] == [(0, "COMPLETE"), (1, "ERROR"), (2, "WAITING"),
                                                       (3, "WAITING"), (4, "WAITING")]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["fold", "kernel", "push", "version", "state", "output", "note"]
    assert len(lines) == 7 and f"{USER}/carvana-q1-fold-1" in lines[2] and "out of memory" in lines[2]
    assert lines[6] == "GPU quota: 10.0 of 30.0 h used this week, 20.0 h left; it refreshes 2026-12-12 00:00 UTC"


def test_queue_without_a_queue_and_folds_all_for_predict_are_one_line(server, tmp_path):
    with pytest.raises(UserError, match="has no kernel queue"):
        kernel_queue.step("q1")
    with pytest.raises(UserError, match="--all-folds: for train kernels"):
        kernel_queue.push_all(KernelSpec(task="predict", preset="tiny", name="q1"))
    assert not (tmp_path / "runs" / "q1" / "kernels.json").exists()


@pytest.mark.parametrize("args, start", [
    (["queue", "--run", "nothing-queued"], "error: run nothing-queued has no kernel queue"),
    (["push", "--task", "predict", "--folds", "all", "--run", "q1", "--user", "alice"],
     "error: --all-folds: for train kernels"),
    (["status", "--folds", "all", "--run", "q1", "--fold", "0", "--user", "alice"], "error: --all-folds: for `kernel push`"),
    (["build", "--session-hours", "30", "--user", "alice"], "error: kernel: --session-hours: 30 is not a finite number at least 0.5 and at most 24"),
])
def test_cli_queue_errors_exit_2_with_one_line(no_credentials, tmp_path, args, start):
    import os
    import subprocess
    import sys
    from test_kernels import ROOT
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "competition", "kernel", *args, "--out", str(tmp_path / "b")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), lines
    assert not (tmp_path / "runs").exists() and not (tmp_path / "b").exists()
