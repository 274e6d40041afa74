"""Kaggle as kaggle 2.2.5 answers it (issue 46): a first push that Kaggle answers 403 before, a record rebuilt from
Kaggle, every version's outcome and the last usable one, --version, --dry-run, logs, the quota, the queue's
retryable and permanent refusals, a foreign record or user, and `clean` keeping the record of pushed kernels.
Through the real kaggle package with only its HTTP transport faked (tests/fake_kaggle.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from competition.__main__ import main
from competition.base.errors import UserError
from competition.kaggle import checkpoint as kernel_checkpoint, kernels, queue as kernel_queue, state as kstate
from competition.kaggle.spec import KernelSpec
from competition.runs.lock import fold_lock, held
from test_kernel_checkpoint import _backup_output, _state
from test_kernels import USER, server  # noqa: F401 - the fake Kaggle fixture

SPEC = KernelSpec(preset="tiny", name="t1")
SLUG = "carvana-t1-fold-0"
REF = f"{USER}/{SLUG}"


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def _record(root: Path, run: str = "t1") -> Path:
    return root / "runs" / run / "kernels.json"


def _endpoints(server) -> list[str]:
    return [e for e, _ in server.sent]


def _stopped(push: int, why: str) -> bytes:
    settings = {"name": "t1", "task": "train", "fold": 0, "kernel": REF, "push": push}
    return json.dumps(kstate.state_record("stopped", why, settings)).encode()


# --- the first push, a lost record ---------------------------------------------------------------------
def test_the_first_push_of_a_kernel_kaggle_answers_403_for_goes_through(server, tmp_path, capsys):
    """Kaggle answers 403 for a kernel it does not know (kaggle-cli #951): that is a first push, not an error."""
    kernels.push(SPEC, out_root=tmp_path / "build")
    endpoints = _endpoints(server)
    assert endpoints.index("GetKernelSessionStatus") < endpoints.index("SaveKernel")  # asked, answered 403
    assert server.versions == {SLUG: 1}
    [push] = json.loads(_record(tmp_path).read_text())["kernels"][SLUG]["pushes"]
    assert push["push"] == 1 and push["version"] == 1 and push["expect"] is None
    assert "no earlier output known: starts from the beginning" in capsys.readouterr().out


def test_a_lost_record_is_rebuilt_from_kaggle_before_a_push(server, tmp_path, capsys):
    """kernels.json gone (`make clean` of old, another machine): the kernel's latest output says how far it got,
    and the push expects exactly that output mounted instead of starting the fold over."""
    server.known.add(SLUG)
    server.outputs = {kstate.STATE_FILE: _state(3, epochs=5)}
    kernels.push(SPEC, out_root=tmp_path / "build")
    out = capsys.readouterr().out
    assert f"runs/t1/kernels.json had no record of {REF}, which Kaggle knows: rebuilt from its latest output " \
           "(push 3 (time-limited, epochs 5))" in out
    text = server.body("SaveKernel")["text"]
    assert "'push': 4" in text and "'expect': {'push': 3, 'state': 'time-limited', 'progress': {'epochs': 5}}" in text
    pushes = json.loads(_record(tmp_path).read_text())["kernels"][SLUG]["pushes"]
    assert [p["push"] for p in pushes] == [1, 2, 3, 4] and pushes[-1]["version"] == 1


def test_a_record_of_another_user_is_one_line_and_nothing_is_sent(server, tmp_path, capsys):
    kernels.push(SPEC, out_root=tmp_path / "build")
    record = _record(tmp_path)
    record.write_text(record.read_text().replace(REF, f"alice/{SLUG}"))
    before, sent = record.read_bytes(), len(server.sent)
    capsys.readouterr()
    assert main(["kernel", "push", "--preset", "tiny", "--run", "t1", "--out", str(tmp_path / "build")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: runs/t1/kernels.json records {SLUG} as alice/{SLUG}, not {REF}")
    assert record.read_bytes() == before and "SaveKernel" not in _endpoints(server)[sent:]


def test_a_push_as_another_user_is_refused_before_anything_is_sent(server, tmp_path):
    with pytest.raises(UserError) as e:
        kernels.push(KernelSpec(preset="tiny", name="t1", user="alice"), out_root=tmp_path / "build")
    assert _one_line(e).startswith(f"alice/{SLUG} is not yours: your Kaggle credentials are {USER}'s")
    assert not server.sent and not _record(tmp_path).exists() and not (tmp_path / "build").exists()


# --- versions: outcomes, the last usable one, --version --------------------------------------------
def test_a_stranded_output_is_named_with_the_commands_that_resume_from_the_last_usable_version(server, tmp_path,
                                                                                              capsys):
    """Version 1 stopped at its time limit (usable); version 2 stopped in its first minute (its resume check
    failed): its output holds nothing. status names version 1 and the exact way back; a plain re-push is refused
    (it would mount version 2's empty output); checkpoint and output take --version 1."""
    kernels.push(SPEC, out_root=tmp_path / "build")
    server.outputs = {kstate.STATE_FILE: _state(1, epochs=3)}
    assert kernels.status(SPEC) == "TIME_LIMITED"
    kernels.push(SPEC, out_root=tmp_path / "build")
    assert server.versions[SLUG] == 2
    server.status_answer = {"status": "ERROR", "failureMessage": "exit code 2"}
    server.outputs = {kstate.STATE_FILE: _stopped(2, "resume check of t1 push 2: found nothing under /kaggle/input")}
    server.outputs_by_version[(SLUG, 1)] = _backup_output(push=1, epochs=3)
    with pytest.raises(UserError) as e:
        kernels.status(SPEC)
    line = _one_line(e)
    checkpoint = "python -m competition kernel checkpoint --task train --run t1 --preset tiny --fold 0 --version 1"
    assert f"{REF} stopped before it trained or predicted: resume check of t1 push 2: found nothing" in line
    assert "its last usable output is version 1's (push 1 (time-limited, epochs 3))" in line
    assert f"`{checkpoint}`, then `python -m competition kernel push --task train --run t1 --preset tiny --fold 0 " \
           "--resume-from dataset`" in line
    pushes = json.loads(_record(tmp_path).read_text())["kernels"][SLUG]["pushes"]
    assert [p["outcome"]["state"] for p in pushes] == ["time-limited", "stopped"]

    sent = len(server.sent)
    with pytest.raises(UserError) as e:
        kernels.push(SPEC, out_root=tmp_path / "build")
    assert f"{REF}'s latest version (push 2) left nothing to resume from" in _one_line(e) and checkpoint in str(e.value)
    assert "SaveKernel" not in _endpoints(server)[sent:]

    dataset = kernel_checkpoint.checkpoint(SPEC, version=1)
    assert any("ListKernelSessionOutput" == e and b.get("versionLabel") == "v1" for e, b in server.sent)
    uploaded = server.datasets[dataset][-1]  # folders go up as zips
    assert json.loads(uploaded[kstate.STATE_FILE])["push"] == 1 and "fold0.zip" in uploaded
    capsys.readouterr()
    files = kernels.output(SPEC, dest=tmp_path / "v1", version=1)
    assert (tmp_path / "v1" / "fold0" / "backup" / "state.json").is_file() and len(files) == 7  # its 6 files + log


# --- --dry-run, logs, the quota -----------------------------------------------------------------------
def test_a_dry_run_saves_a_version_without_a_session(server, tmp_path, capsys):
    kernels.push(SPEC, out_root=tmp_path / "build", dry_run=True)
    body = server.body("SaveKernel")
    assert body["kernelExecutionType"] == "QUICK_SAVE"  # kaggle 2.2.5's no_run: Kaggle saves, runs nothing
    assert "without running it (no GPU time)" in capsys.readouterr().out
    [push] = json.loads(_record(tmp_path).read_text())["kernels"][SLUG]["pushes"]
    assert push["dry_run"] is True and push["version"] == 1
    kernels.push(SPEC, out_root=tmp_path / "build")
    assert "kernelExecutionType" not in server.bodies("SaveKernel")[-1] or \
        server.bodies("SaveKernel")[-1]["kernelExecutionType"] != "QUICK_SAVE"


def test_a_dry_run_of_a_kernel_with_an_output_to_resume_is_refused(server, tmp_path):
    """A saved version becomes the latest, whose (empty) output the next version would mount."""
    kernels.push(SPEC, out_root=tmp_path / "build")
    server.outputs = {kstate.STATE_FILE: _state(1, epochs=3)}
    sent = len(server.sent)
    with pytest.raises(UserError) as e:
        kernels.push(SPEC, out_root=tmp_path / "build", dry_run=True)
    assert f"--dry-run of {REF}, which has an output to resume from" in _one_line(e)
    assert "SaveKernel" not in _endpoints(server)[sent:]
    assert len(json.loads(_record(tmp_path).read_text())["kernels"][SLUG]["pushes"]) == 1


@pytest.mark.parametrize("status, kind", [("COMPLETE", "application/json"), ("RUNNING", "text/event-stream")])
def test_logs_print_an_ended_kernels_log_and_follow_a_running_one(server, tmp_path, capsys, status, kind):
    server.known.add(SLUG)
    server.status_answer = {"status": status}
    server.log = [{"stream_name": "stdout", "time": 1.0, "data": "Epoch 1/3\n"},
                  {"stream_name": "stderr", "time": 2.0, "data": "warning: slow\n"}]
    assert kernels.logs(SPEC) == 2
    assert capsys.readouterr().out == "Epoch 1/3\nwarning: slow\n"
    assert kernels.logs(SPEC, version=3) == 2
    assert server.urls[-1].endswith(f"/v1/kernels/logs/stream/{USER}/{SLUG}?versionLabel=v3")


def test_logs_of_a_kernel_kaggle_does_not_know_is_one_line(server, capsys):
    assert main(["kernel", "logs", "--preset", "tiny", "--run", "t1"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: Kaggle knows no such kernel of yours while reading the log of {REF}")


def test_quota_is_read_from_kaggle(server, capsys):
    server.quota = {"timeUsed": "97200s", "totalTimeAllowed": "108000s"}  # 27 of 30 h
    assert main(["kernel", "quota"]) == 0
    assert capsys.readouterr().out.strip() == ("GPU quota: 27.0 of 30.0 h used this week, 3.0 h left; it refreshes "
                                               "2026-12-12 00:00 UTC")


def test_push_all_is_refused_when_the_folds_need_more_than_the_quota_left(server, tmp_path, capsys):
    """unet's five folds cost hours by `plan`'s arithmetic; with 0.5 h left nothing is queued unless told."""
    server.quota = {"timeUsed": "106200s", "totalTimeAllowed": "108000s"}  # 29.5 of 30 h
    argv = ["kernel", "push", "--folds", "all", "--preset", "unet", "--run", "q1", "--out", str(tmp_path / "build")]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "GPU hours (`plan`'s estimate) but 0.5 of your 30 this week are left" in line and "--over-quota" in line
    assert "SaveKernel" not in _endpoints(server) and not _record(tmp_path, "q1").exists()
    assert main([*argv, "--over-quota"]) == 0
    assert len(server.bodies("SaveKernel")) == 2


# --- the queue: retryable and permanent refusals ---------------------------------------------------
def test_the_queue_retries_busy_sessions_a_bounded_number_of_times(server, tmp_path, capsys):
    spec = KernelSpec(preset="unet", name="q1")
    kernel_queue.push_all(spec, out_root=tmp_path / "build")
    server.statuses = {"carvana-q1-fold-1": {"status": "RUNNING"}}  # fold 0 ended: one slot free
    server.save_answer = {"error": "Maximum batch GPU session count of 2 reached."}
    for tries in range(1, kernel_queue.MAX_RETRIES):
        assert kernel_queue.step("q1", tmp_path / "build")[2] == "WAITING"
        assert f"try {tries} of {kernel_queue.MAX_RETRIES}" in capsys.readouterr().out
    with pytest.raises(UserError) as e:
        kernel_queue.step("q1", tmp_path / "build")
    assert f"fold 2: its push was deferred {kernel_queue.MAX_RETRIES} times in a row" in _one_line(e)
    queue = json.loads(_record(tmp_path, "q1").read_text())["queue"]
    assert queue["retries"] == {"2": kernel_queue.MAX_RETRIES} and queue["folds"] == [0, 1, 2, 3, 4]
    assert queue["spec"]["session_hours"] == 12.0  # stored at push --all-folds, not reread


def test_a_permanent_refusal_stops_the_queue_and_keeps_its_state(server, tmp_path):
    kernel_queue.push_all(KernelSpec(preset="unet", name="q1"), out_root=tmp_path / "build")
    server.statuses = {"carvana-q1-fold-1": {"status": "RUNNING"}}
    server.save_answer = {"error": "Notebook title is already in use"}
    before = _record(tmp_path, "q1").read_bytes()
    with pytest.raises(UserError) as e:
        kernel_queue.run_queue("q1", tmp_path / "build", sleep=pytest.fail)
    line = _one_line(e)
    assert line.startswith("fold 2: Kaggle refused the push of") and "the queue stopped, its state kept" in line
    after = json.loads(_record(tmp_path, "q1").read_bytes())
    assert after["queue"] == json.loads(before)["queue"]
    assert "carvana-q1-fold-2" not in after["kernels"]


# --- clean ------------------------------------------------------------------------------------------
def _workspace(root: Path) -> None:
    for name in ("cache/tiny/x.npy", "kernels/build/carvana-t1-fold-0/run.py", "data/synthetic/train/a.jpg",
                 "runs/demo/fold0/model.keras", "submissions/demo.csv.gz", "runs/unet/fold0/model.keras",
                 "runs/unet/kernels.json", "runs/plain/config.json", "submissions/unet.csv.gz"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_clean_deletes_what_can_be_made_again_and_keeps_the_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _workspace(tmp_path)
    assert main(["clean"]) == 0
    assert _files(tmp_path) == {"runs/unet/fold0/model.keras", "runs/unet/kernels.json", "runs/plain/config.json",
                                "submissions/unet.csv.gz"}
    assert "removed cache, kernels/build, data/synthetic, runs/demo, submissions/demo.csv.gz" in capsys.readouterr().out


def test_clean_all_keeps_each_runs_record_of_pushed_kernels_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _workspace(tmp_path)
    assert main(["clean", "--all"]) == 0
    assert _files(tmp_path) == {"runs/unet/kernels.json"}
    assert "kept runs/unet/kernels.json: the record of the run's pushed kernels" in capsys.readouterr().out


def test_clean_while_a_run_trains_deletes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _workspace(tmp_path)
    before = _files(tmp_path)
    with held(fold_lock(Path("runs/unet"), 0), "training"):
        assert main(["clean", "--all"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: runs/unet/fold0 is being trained by process") and "clean deletes nothing" in line
    assert _files(tmp_path) - {"runs/unet/.fold0.lock"} == before


# --- a trial stopped on purpose -------------------------------------------------------------------------
def test_a_kernels_time_limit_caps_the_sessions_and_travels_with_its_resume_command(server, tmp_path):
    from competition.base.timelimit import parse_duration
    from competition.kaggle import on_kaggle
    from competition.kaggle.spec import resume_command
    spec = KernelSpec(preset="tiny", name="t1", epochs=3, time_limit="20m")
    kernels.push(spec, out_root=tmp_path / "build")
    assert "'time_limit': '20m'" in server.body("SaveKernel")["text"]
    assert on_kaggle.time_limit("train", 0.0, now=0.0, cap="20m") == "1200s"
    assert parse_duration(on_kaggle.time_limit("train", 0.0, now=0.0)) > 1200  # the session's, uncapped
    assert resume_command(spec).endswith("--epochs 3 --time-limit 20m")
    with pytest.raises(UserError, match="20 minutes"):
        kernels.build(KernelSpec(preset="tiny", name="t1", time_limit="20 minutes"), tmp_path / "b2")
    assert not (tmp_path / "b2").exists()


def test_the_accelerator_table_in_the_docs_is_the_codes():
    from competition.kaggle.machines import accelerator_table
    text = (Path(__file__).resolve().parents[1] / "docs" / "kaggle.md").read_text()
    section = text.split("<!-- accelerators -->\n", 1)[1].split("<!-- accelerators end -->", 1)[0]
    assert section.strip() == accelerator_table().strip(), "copy competition.kaggle.machines.accelerator_table()"


def test_a_train_kernels_budget_travels_to_its_train_command(server, tmp_path, capsys):
    """kernel push --budget: by default the kernel's train gets the session left (its --time-limit) as a cap;
    'session' fills it; a duration goes as given, filled; 'none' and a trial's --epochs give no budget; push says
    which; a predict kernel, or a budget beside --epochs, refuses it."""
    from competition.kaggle.machines import budget_args
    assert budget_args(None, None, "40000s") == ["--budget", "40000s", "--budget-cap"]
    assert budget_args("session", None, "40000s") == ["--budget", "40000s"]
    assert budget_args("2h", None, "40000s") == ["--budget", "2h"]
    assert budget_args("none", None, "40000s") == [] and budget_args(None, 1, "40000s") == []
    kernels.push(KernelSpec(preset="tiny", name="t1", budget="session"), out_root=tmp_path / "build")
    assert "'budget': 'session'" in server.body("SaveKernel")["text"]
    assert "the fold planned to fit what is left of the session, filled" in capsys.readouterr().out
    kernels.push(KernelSpec(preset="tiny", name="t2"), out_root=tmp_path / "build")
    assert "the fold planned to fit what is left of the session as a cap: the preset's own schedule" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match="--budget: for train kernels"):
        kernels.build(KernelSpec(task="predict", preset="tiny", name="t1", budget="2h"), tmp_path / "b2")
    with pytest.raises(UserError, match="--budget 'soon'"):
        kernels.build(KernelSpec(preset="tiny", name="t1", budget="soon"), tmp_path / "b3")
    with pytest.raises(UserError, match="--budget 2h and --epochs 1: the budget chooses the epochs"):
        kernels.build(KernelSpec(preset="tiny", name="t1", budget="2h", epochs=1), tmp_path / "b4")
    kernels.build(KernelSpec(preset="tiny", name="t1", budget="none", epochs=1), tmp_path / "b5")


def test_push_all_weighs_each_fold_as_its_budget_spends_it(monkeypatch):
    """The quota check counts a fold at the preset's hours, or at most a session with the default cap, the whole
    session when it fills it, a duration as given (mutation: every budget weighed as the preset's epochs)."""
    from competition.config import preset
    from competition.costs import budget as costs_budget
    from competition.kaggle.machines import usable_hours
    full = costs_budget.fold_hours(preset("unet"), "t4x2", "none")
    assert costs_budget.fold_hours(preset("unet"), "t4x2", None) == min(full, usable_hours("train"))
    assert costs_budget.fold_hours(preset("unet"), "t4x2", "session") == usable_hours("train")
    assert costs_budget.fold_hours(preset("unet"), "t4x2", "90m") == 1.5
    long = preset("unet", epochs=400)  # ten times the preset's: more than a session
    assert costs_budget.fold_hours(long, "t4x2", "none") > usable_hours("train") == \
        costs_budget.fold_hours(long, "t4x2", None)
