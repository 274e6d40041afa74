"""Kaggle kernels: push folders checked by the real kaggle package (only its HTTP transport faked), status,
output, one-line errors, and the built entry scripts run end to end under a temporary stand-in for /kaggle."""
from __future__ import annotations

import base64
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from competition.kaggle import state as kstate, spec as kspec, build as kbuild, machines
from competition import COMPETITION
from competition.kaggle import kernels, on_kaggle
from competition.config import preset
from competition.base.errors import UserError
from competition.kaggle.spec import KernelSpec
from competition.base.submission_csv import validate

import fake_kaggle
import forkserver
from fake_kaggle import USER

ROOT = Path(__file__).resolve().parents[1]
server = fake_kaggle.server  # the fake Kaggle (tests/fake_kaggle.py), also for test_kernel_queue


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def _embedded_package(script: str) -> zipfile.ZipFile:
    m = re.search(r'^PACKAGE_ZIP = """\n(.*?)\n"""', script, re.MULTILINE | re.DOTALL)
    assert m, "no embedded package"
    return zipfile.ZipFile(io.BytesIO(base64.b64decode("".join(m.group(1).split()))))


# --- push: what the real kaggle package would send ------------------------------------------------
def test_push_train_kernel_sends_a_valid_private_gpu_kernel_without_internet(server, tmp_path, capsys):
    spec = KernelSpec(task="train", fold=1, preset="tiny", name="t1")
    kernels.push(spec, out_root=tmp_path / "build")
    body = server.body("SaveKernel")
    folder = tmp_path / "build" / "carvana-t1-fold-1"
    assert body["slug"] == f"{USER}/carvana-t1-fold-1" and body["newTitle"] == "carvana t1 fold 1"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["isPrivate"] is True and body["enableGpu"] is True and body["enableInternet"] is False
    assert body["machineShape"] == "NvidiaTeslaT4"
    # its own slug: a re-pushed version mounts the earlier version's output and resumes from it
    assert body["competitionDataSources"] == [COMPETITION] and body["kernelDataSources"] == [body["slug"]]
    assert body["text"] == (folder / "run.py").read_text()
    compile(body["text"], "run.py", "exec")
    assert "SETTINGS = {'task': 'train', 'name': 't1', 'preset': 'tiny'" in body["text"]
    names = _embedded_package(body["text"]).namelist()
    assert "competition/__main__.py" in names and "competition/kaggle/kernels.py" in names
    out = capsys.readouterr()
    assert "does not resolve to the specified id" not in out.out  # the package's own title/slug check
    assert f"pushed {USER}/carvana-t1-fold-1 version 1" in out.out


def test_push_predict_kernel_lists_the_train_kernels_as_sources(server, tmp_path):
    spec = KernelSpec(task="predict", folds=[0, 1], preset="tiny", name="t1", user=USER, shard=(1, 3))
    kernels.push(spec, out_root=tmp_path / "build")
    body = server.body("SaveKernel")
    assert body["slug"] == f"{USER}/carvana-t1-predict-shard-1-of-3"
    assert body["kernelDataSources"] == [f"{USER}/carvana-t1-fold-0", f"{USER}/carvana-t1-fold-1",
                                         f"{USER}/carvana-t1-predict-shard-1-of-3"]
    assert body["competitionDataSources"] == [COMPETITION] and body["enableInternet"] is False
    assert "'shard': [1, 3]" in body["text"] and "'folds': [0, 1]" in body["text"]


@pytest.mark.parametrize("name", ["p100", "NvidiaTeslaP100", "tpu"])
def test_a_retired_or_unsupported_accelerator_is_one_line_and_nothing_is_sent(server, tmp_path, name):
    """kaggle 2.2.5 lists NvidiaTeslaP100 in _RETIRED_ACCELERATORS (its sessions run on T4 x2): refused, with
    what Kaggle runs instead; Kaggle's own spelling of it too; the TPU, which the toolkit cannot train on."""
    with pytest.raises(UserError) as e:
        kernels.push(KernelSpec(preset="tiny", name="t1", accelerator=name), out_root=tmp_path / "build")
    line = _one_line(e)
    assert ("retired" in line and "T4 x2" in line) if name != "tpu" else "TPU" in line
    assert "--accelerator t4x2" in line
    assert not [r for r in server.sent if "SaveKernel" in r[0]] and not (tmp_path / "build").exists()


def test_accelerator_none_is_a_cpu_kernel(server, tmp_path):
    kernels.push(KernelSpec(preset="tiny", name="t1", accelerator="none"), out_root=tmp_path / "build")
    body = server.body("SaveKernel")
    assert body["enableGpu"] is False and "machineShape" not in body


def test_push_refused_by_kaggle_is_one_line(server, tmp_path):
    server.save_answer = {"error": "Notebook title is already in use"}
    with pytest.raises(UserError) as e:
        kernels.push(KernelSpec(preset="tiny", name="t1"), out_root=tmp_path / "build")
    assert "already in use" in _one_line(e)


def test_built_metadata_is_the_template_filled_in(tmp_path):
    for task in kspec.TASKS:
        folder = kernels.build(KernelSpec(task=task, preset="tiny", name="t1", user="alice"), tmp_path)
        meta = json.loads((folder / kbuild.METADATA_FILE).read_text())
        template = kbuild.template_metadata(task)
        assert set(meta) == set(template)
        assert all(meta[k] == template[k] for k in ("language", "kernel_type", "is_private", "enable_internet",
                                                     "competition_sources"))
        assert meta["enable_internet"] is False and meta["competition_sources"] == [COMPETITION]
        assert meta["id"] == f"alice/{folder.name}" and kspec.slugify(meta["title"]) == folder.name


def test_titles_slug_like_the_kaggle_package():
    from slugify import slugify  # python-slugify, what kaggle's kernels_push compares the id with
    for spec in (KernelSpec(name="my_run.v2", fold=3), KernelSpec(task="predict", name="Unet 1280", shard=(0, 4))):
        assert kspec.slugify(kspec.title(spec)) == slugify(kspec.title(spec))


def test_titles_fit_in_50_characters_with_a_stable_hash_and_stay_one_per_run_fold_and_task():
    from slugify import slugify
    long = "resnet50-imagenet-frozen-3-epochs-1280x1918-lovasz-and-dice-v2"
    specs = [KernelSpec(name=long, fold=k) for k in range(5)] + [
        KernelSpec(name=long, fold=0, epochs=1), KernelSpec(name=long + "-b", fold=0),
        KernelSpec(task="predict", name=long), KernelSpec(task="predict", name=long, shard=(11, 16))]
    titles = [kspec.title(s) for s in specs]
    assert all(len(t) <= 50 for t in titles), [len(t) for t in titles]
    assert len(set(titles)) == len(titles) and len({kspec.kernel_slug(s) for s in specs}) == len(specs)
    assert titles == [kspec.title(s) for s in specs]  # stable: the same run gets the same slug next time
    assert all(kspec.slugify(t) == slugify(t) for t in titles)
    assert titles[1].startswith("carvana resnet50-imagenet") and titles[1].endswith(" fold 1")
    assert titles[5].endswith(" fold 0 trial 1 epochs")
    # a predict kernel finds the shortened train kernels
    assert kspec.train_refs(KernelSpec(task="predict", name=long, preset="tiny"), "u") == [
        f"u/{kspec.kernel_slug(s)}" for s in specs[:2]]
    assert kspec.title(KernelSpec(name="t1", fold=1)) == "carvana t1 fold 1"  # short names unchanged


def test_a_long_run_name_pushes_a_title_kaggle_accepts(server, tmp_path, capsys):
    kernels.push(KernelSpec(preset="tiny", name="a-very-long-run-name-for-the-tiny-preset-with-lovasz"),
                 out_root=tmp_path / "build")
    body = server.body("SaveKernel")
    assert len(body["newTitle"]) <= 50 and body["slug"] == f"{USER}/{kspec.slugify(body['newTitle'])}"
    assert "does not resolve to the specified id" not in capsys.readouterr().out


def test_embedded_package_is_every_module_and_reproducible():
    data = kbuild.package_zip()
    assert data == kbuild.package_zip()
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    expected = {f"competition/{p.relative_to(kspec.PACKAGE_DIR).as_posix()}"
                for p in kspec.PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert names == expected


# --- one-line errors ------------------------------------------------------------------------------
def test_unknown_accelerator_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        kernels.build(KernelSpec(user="alice", accelerator="a100"), tmp_path)
    line = _one_line(e)
    assert "a100" in line and all(choice in line for choice in machines.OFFERED)
    assert "p100" not in line  # retired: not offered
    assert not list(tmp_path.iterdir())


def test_missing_user_is_one_line(no_credentials, tmp_path):
    with pytest.raises(UserError) as e:
        kernels.build(KernelSpec(), tmp_path)
    line = _one_line(e)
    assert "--user" in line and "KAGGLE_USERNAME" in line and str(no_credentials) in line


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "competition", "kernel", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, start", [
    (["build", "--user", "alice", "--accelerator", "a100"], "error: unknown --accelerator 'a100'"),
    (["build"], "error: no Kaggle user name"),
    (["build", "--user", "alice", "--fold", "7"], "error: --fold 7 is out of range"),
])
def test_cli_errors_exit_2_with_one_line(no_credentials, tmp_path, args, start):
    proc = _cli(*args, "--out", str(tmp_path / "build"), env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), lines


# --- status and output ----------------------------------------------------------------------------
def test_status_error_shows_kaggles_failure_message(server):
    server.known.add("carvana-t1-fold-0")  # pushed before this test
    server.status_answer = {"status": "ERROR", "failureMessage": "Your notebook tried to allocate\nmore memory"}
    with pytest.raises(UserError) as e:
        kernels.status(KernelSpec(preset="tiny", name="t1"))
    line = _one_line(e)
    assert f"{USER}/carvana-t1-fold-0 ended in ERROR" in line and "tried to allocate more memory" in line
    assert server.bodies("GetKernelSessionStatus")[-1] == {"userName": USER, "kernelSlug": "carvana-t1-fold-0"}


@pytest.mark.parametrize("state", ["QUEUED", "RUNNING", "COMPLETE"])
def test_status_prints_the_state(server, capsys, state):
    server.known.add("carvana-t1-predict")  # pushed before this test
    server.status_answer = {"status": state}
    assert kernels.status(KernelSpec(task="predict", preset="tiny", name="t1")) == state
    assert f"{USER}/carvana-t1-predict: {state}" in capsys.readouterr().out


def test_status_error_prints_the_command_that_resumes_it(server):
    """A kernel that failed after its first epoch left a backup (its kernel-state.json says "running"): resumed
    from its output; one that left no output at all: started over, and the line says the progress is none."""
    server.known.add("carvana-t1-fold-1-trial-2-epochs")  # pushed before this test
    server.status_answer = {"status": "ERROR", "failureMessage": "Your notebook exceeded the time limit"}
    server.outputs = {kstate.STATE_FILE: json.dumps({"state": "running", "detail": "fold 1 after epoch 1"}).encode()}
    spec = KernelSpec(preset="tiny", name="t1", fold=1, epochs=2, accelerator="l4")
    with pytest.raises(UserError) as e:
        kernels.status(spec)
    line = _one_line(e)
    command = ("python -m competition kernel push --task train --run t1 --preset tiny --fold 1 --epochs 2 "
               "--accelerator l4")
    assert "exceeded the time limit" in line and f"resume it with `{command}`" in line
    server.outputs = {}
    server.known.add("carvana-t2-fold-1-trial-2-epochs")
    with pytest.raises(UserError) as e:
        kernels.status(dataclasses.replace(spec, name="t2"))
    assert f"start over with `{command.replace('t1', 't2')} --fresh`" in _one_line(e)


def test_status_of_a_time_limited_kernel_says_it_is_not_finished(server, capsys):
    server.known.add("carvana-t1-predict-shard-1-of-4")  # pushed before this test
    server.status_answer = {"status": "COMPLETE"}
    server.outputs = {kstate.STATE_FILE: json.dumps({"state": "time-limited", "detail": "fold 0 after epoch 7"}).encode(),
                      "fold0/model.keras": b"not fetched by status"}
    spec = KernelSpec(task="predict", preset="tiny", name="t1", shard=(1, 4))
    assert kernels.status(spec) == "TIME_LIMITED"
    out = capsys.readouterr().out
    assert "COMPLETE but NOT FINISHED" in out and "fold 0 after epoch 7" in out
    assert "`python -m competition kernel push --task predict --run t1 --preset tiny --shard 1/4`" in out
    assert set(server.downloaded) == {kstate.STATE_FILE}  # only the small state file was downloaded, not the model


def test_status_of_a_finished_kernel_with_its_state_file_is_complete(server, capsys):
    server.known.add("carvana-t1-fold-0")  # pushed before this test
    server.outputs = {kstate.STATE_FILE: json.dumps({"state": "complete", "detail": "fold 0"}).encode()}
    assert kernels.status(KernelSpec(preset="tiny", name="t1")) == "COMPLETE"
    assert "fetch its outputs" in capsys.readouterr().out


def test_kernel_time_limit_is_the_session_less_the_margin_less_the_time_used():
    from competition.base.timelimit import parse_duration
    hour = 3600.0
    train = parse_duration(on_kaggle.time_limit("train", started=50.0, now=50.0 + hour))
    predict = parse_duration(on_kaggle.time_limit("predict", started=50.0, now=50.0 + hour))
    assert train == 12 * hour - machines.TIME_MARGIN_SECONDS["train"] - hour
    assert predict == 12 * hour - machines.TIME_MARGIN_SECONDS["predict"] - hour
    assert 10 * hour < train < predict < 11 * hour  # room to score a fold after training, less after predicting
    assert parse_duration(on_kaggle.time_limit("train", started=0.0, now=13 * hour)) == 1  # never zero or negative


def test_session_hours_come_from_the_option_or_the_environment_and_reach_the_kernel(server, tmp_path, monkeypatch):
    from competition.base.timelimit import parse_duration
    kernels.push(KernelSpec(preset="tiny", name="t1", session_hours=9), out_root=tmp_path / "build")
    assert _settings(server.sent[-1][1]["text"])["session_hours"] == 9.0
    monkeypatch.setenv("KAGGLE_SESSION_HOURS", "10.5")
    kernels.push(KernelSpec(preset="tiny", name="t2"), out_root=tmp_path / "build")
    assert _settings(server.sent[-1][1]["text"])["session_hours"] == 10.5
    monkeypatch.setenv("KAGGLE_SESSION_HOURS", "twelve")
    with pytest.raises(UserError, match="KAGGLE_SESSION_HOURS='twelve'"):
        kernels.build(KernelSpec(preset="tiny", name="t3", user="alice"), tmp_path / "b3")
    assert not (tmp_path / "b3").exists()
    assert parse_duration(on_kaggle.time_limit("train", 0.0, now=0.0, session_hours=9)) == (
        9 * 3600 - machines.TIME_MARGIN_SECONDS["train"])


def test_gpu_mismatch_is_warned_about():
    assert on_kaggle.gpu_mismatch("t4x2", ["Tesla T4", "Tesla T4"]) is None
    for got in ([], ["Tesla T4"], ["Tesla P100-PCIE-16GB", "Tesla P100-PCIE-16GB"]):
        warning = on_kaggle.gpu_mismatch("t4x2", got)
        assert warning and "asked for 2x T4" in warning and (", ".join(got) or "no GPU") in warning
    assert on_kaggle.gpu_mismatch("l4", ["NVIDIA L4"]) is None and "got no GPU" in on_kaggle.gpu_mismatch("l4", [])
    assert on_kaggle.gpu_mismatch("none", []) is None and on_kaggle.gpu_mismatch(None, []) is None


def test_l4_warns_that_it_may_not_be_open(server, tmp_path, capsys):
    kernels.push(KernelSpec(preset="tiny", name="t1", accelerator="l4"), out_root=tmp_path / "build")
    assert server.body("SaveKernel")["machineShape"] == "NvidiaL4"
    err = capsys.readouterr().err
    assert "warning:" in err and "only to some competitions" in err


def test_trial_kernel_never_takes_the_real_folds_slug():
    real, trial = KernelSpec(fold=2, name="r"), KernelSpec(fold=2, name="r", epochs=1)
    assert kspec.kernel_slug(real) == "carvana-r-fold-2"
    assert kspec.kernel_slug(trial) == "carvana-r-fold-2-trial-1-epochs"
    # a predict kernel's default train kernels are the real folds, never the trial ones
    assert kspec.train_refs(KernelSpec(task="predict", name="r", preset="tiny"), "u") == [
        "u/carvana-r-fold-0", "u/carvana-r-fold-1"]


def test_first_push_does_not_warn_about_its_own_missing_output(server, tmp_path, capsys):
    server.save_answer = {"versionNumber": 1, "invalidKernelSources": [f"{USER}/carvana-t1-fold-0"]}
    kernels.push(KernelSpec(preset="tiny", name="t1"), out_root=tmp_path / "build")
    assert "did not attach" not in capsys.readouterr().err
    server.save_answer = {"versionNumber": 1, "invalidKernelSources": [f"{USER}/carvana-t1-fold-0", "x/other"]}
    kernels.push(KernelSpec(preset="tiny", name="t1"), out_root=tmp_path / "build")
    err = capsys.readouterr().err
    assert "did not attach the kernel source(s) x/other " in err


def test_status_of_a_kernel_kaggle_denies_is_one_line(server):
    server.fail["GetKernelSessionStatus"] = 403
    with pytest.raises(UserError) as e:
        kernels.status(KernelSpec(preset="tiny", name="t1"))
    assert f"Kaggle knows no kernel {USER}/carvana-t1-fold-0 of yours (it answers 403)" in _one_line(e)


def test_output_of_a_train_kernel_lands_in_the_run_folder(server, tmp_path):
    server.known.add("carvana-t1-fold-0")  # pushed before this test
    server.outputs = {"config.json": json.dumps(preset("tiny").to_json()).encode(),
                      "folds.csv": b"img,fold\n", "fold0/model.keras": b"model bytes", "fold0/train.json": b"{}"}
    dest = tmp_path / "runs" / "t1"
    moved = kernels.output(KernelSpec(preset="tiny", name="t1"), dest=dest)
    assert (dest / "fold0" / "model.keras").read_bytes() == b"model bytes"
    assert (dest / "config.json").is_file() and (dest / "carvana-t1-fold-0.log").is_file()
    assert len(moved) == 5 and not list(dest.glob(".kernel-output-*"))


def test_output_of_a_predict_kernel_is_the_submission_and_its_record_not_its_refiner(server, tmp_path):
    server.known.add("carvana-t1-predict-shard-0-of-2")  # pushed before this test
    server.outputs = {"t1.shard-0-of-2.csv.gz": b"csv bytes", "t1.shard-0-of-2.csv.gz.json": b"{}",
                      "kernel-state.json": b"{}", "refiner/all.keras": b"net", "refiner/refiner.json": b"{}"}
    dest = tmp_path / "submissions"
    kernels.output(KernelSpec(task="predict", preset="tiny", name="t1", shard=(0, 2)), dest=dest)
    assert (dest / "t1.shard-0-of-2.csv.gz").read_bytes() == b"csv bytes"
    assert (dest / "t1.shard-0-of-2.csv.gz.json").is_file()
    assert not (dest / "refiner").exists()  # each shard's would overwrite the last one's


def test_output_before_the_kernel_is_complete_is_refused(server, tmp_path):
    server.known.add("carvana-t1-predict")  # pushed before this test
    server.status_answer = {"status": "RUNNING"}
    with pytest.raises(UserError) as e:
        kernels.output(KernelSpec(task="predict", preset="tiny", name="t1"), dest=tmp_path)
    assert "RUNNING, not COMPLETE" in _one_line(e)
    assert not any(e == "ListKernelSessionOutput" for e, _ in server.sent)


# --- the entry scripts, end to end on CPU, with a temporary folder standing in for /kaggle ----------
@pytest.mark.parametrize("task", ["train", "predict"])
def test_a_kernel_given_no_gpu_stops_before_training_and_says_why(tmp_path, synth_zip_dir, server, task):
    """A kernel that asked for T4 x2 and got none (the stand-in has no GPU) stops in its first minute: one error
    line, the reason in its output's kernel-state.json, no model, no submission; `kernel status` says it in one
    line from that output."""
    spec = KernelSpec(task=task, fold=0, folds=[0] if task == "predict" else None, preset="tiny", name="kg",
                      user=USER)
    folder = kernels.build(spec, tmp_path / "build")
    root = _kaggle_root(tmp_path / "kaggle", synth_zip_dir)
    proc = _run_kernel(folder / "run.py", root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error")]  # beside TensorFlow's start-up noise
    assert line.startswith("error: this kernel asked for 2x T4 (--accelerator t4x2) but got no GPU")
    assert "--accept-machine" in line
    assert "Epoch 1/" not in proc.stdout
    assert sorted(p.name for p in (root / "working").iterdir()) == [kstate.STATE_FILE]
    record = json.loads((root / "working" / kstate.STATE_FILE).read_text())
    assert record["state"] == "stopped" and "got no GPU" in record["detail"]
    server.known.add(folder.name)
    server.status_answer = {"status": "ERROR", "failureMessage": "exit code 2"}
    server.outputs = {kstate.STATE_FILE: (root / "working" / kstate.STATE_FILE).read_bytes()}
    with pytest.raises(UserError) as e:
        kernels.status(spec)
    assert f"{USER}/{folder.name} stopped before it trained or predicted: this kernel asked for 2x T4" in _one_line(e)


def _run_kernel(script: Path, root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KAGGLE_ROOT=str(root), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    # run from the kernel's root, not the repository: the toolkit can only come from the script itself
    return forkserver.run([sys.executable, str(script)], cwd=root, env=env, timeout=300)


def _kaggle_root(root: Path, synth_zip_dir: Path) -> Path:
    comp = root / "input" / COMPETITION
    comp.mkdir(parents=True)
    for z in synth_zip_dir.glob("*.zip"):
        (comp / z.name).symlink_to(z)
    (root / "working").mkdir()
    return root


def test_kernel_scripts_train_a_fold_then_predict_a_valid_submission(tmp_path, synth_zip_dir):
    # asked for T4 x2 (the default), got the stand-in's CPU: trains on it all the same, as --accept-machine says
    train_spec = KernelSpec(task="train", fold=0, preset="tiny", name="kt", user="alice", epochs=1, score=False,
                            accept_machine=True)
    train_dir = kernels.build(train_spec, tmp_path / "build")
    train_root = _kaggle_root(tmp_path / "train-kaggle", synth_zip_dir)
    proc = _run_kernel(train_dir / "run.py", train_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"from {train_root / 'temp' / 'toolkit' / 'competition'}" in proc.stdout
    assert "versions: python" in proc.stdout and "GPUs: 0" in proc.stdout
    assert "asked for 2x T4 (--accelerator t4x2) but got no GPU" in proc.stderr and "--accept-machine" in proc.stderr
    working = train_root / "working"
    for name in ("config.json", "folds.csv", "fold0/model.keras", "fold0/history.csv", "fold0/curves.png",
                 "fold0/train.json", "fold0/oof.npz"):
        assert (working / name).is_file(), name
    assert json.loads((working / "fold0" / "train.json").read_text())["epochs"] == 1
    assert not list(working.rglob("backup")) and not list(working.rglob(".*"))

    predict_spec = KernelSpec(task="predict", folds=[0], preset="tiny", name="kt", user="alice", accelerator="none")
    predict_dir = kernels.build(predict_spec, tmp_path / "build")
    predict_root = _kaggle_root(tmp_path / "predict-kaggle", synth_zip_dir)
    (predict_root / "input" / "carvana-kt-fold-0").symlink_to(working, target_is_directory=True)
    proc = _run_kernel(predict_dir / "run.py", predict_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    submission = predict_root / "working" / "kt.csv.gz"
    assert sorted(p.name for p in (predict_root / "working").iterdir()) == ["kernel-state.json", "kt.csv.gz",
                                                                             "kt.csv.gz.json"]
    assert json.loads((predict_root / "working" / "kernel-state.json").read_text())["state"] == "complete"
    from competition.data.layout import open_dataset
    names = [f"{i}.jpg" for i in open_dataset(synth_zip_dir).test_ids]
    rows, problems = validate(submission, names)
    assert rows == len(names) and problems == []
    assert gzip.decompress(submission.read_bytes()).startswith(b"img,rle_mask\n")


def test_a_train_kernel_by_default_plans_its_fold_within_the_session_and_never_beyond_the_preset(
        tmp_path, synth_zip_dir):
    """No --budget, no --epochs: the kernel's train gets what is left of its session as a cap, so the fold keeps
    the preset's own schedule where the session holds it (tiny: 2 epochs in a 1-hour session's 20 minutes); the
    plan travels in the output, and the kernel's state says the epochs of the planned (what `kernel status`
    shows: mutations: no budget passed, the cap not passed, the plan not mirrored)."""
    spec = KernelSpec(task="train", fold=0, preset="tiny", name="kb", user="alice", accelerator="none", score=False,
                      session_hours=1)
    folder = kernels.build(spec, tmp_path / "build")
    root = _kaggle_root(tmp_path / "kaggle", synth_zip_dir)
    proc = _run_kernel(folder / "run.py", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads((root / "working" / "fold0" / "budget.json").read_text())
    assert plan["cap"] is True and plan["epochs"] == preset("tiny").epochs and 1000 < plan["budget_s"] <= 1200
    assert f"(a cap: at most the preset's {preset('tiny').epochs} epochs)" in proc.stdout
    state = json.loads((root / "working" / kstate.STATE_FILE).read_text())
    assert state["progress"] == {"epochs": 2, "of": 2, "finished": True}
    assert kstate.describe_state(state).endswith("(complete, epochs 2 of 2 planned)")


def test_kernel_script_without_the_competition_input_says_so(tmp_path):
    folder = kernels.build(KernelSpec(preset="tiny", name="kt", user="alice", accelerator="none", score=False),
                           tmp_path / "build")
    (tmp_path / "k" / "input").mkdir(parents=True)
    proc = _run_kernel(folder / "run.py", tmp_path / "k")
    assert proc.returncode == 2
    assert f"error: {tmp_path / 'k' / 'input' / COMPETITION} not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_build_passes_epochs_and_shard_into_the_script(tmp_path):
    proc = _cli("build", "--task", "train", "--preset", "tiny", "--name", "t1", "--user", "alice", "--epochs", "1",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "'epochs': 1" in (tmp_path / "carvana-t1-fold-0-trial-1-epochs" / "run.py").read_text()
    proc = _cli("build", "--task", "predict", "--preset", "tiny", "--name", "t1", "--user", "alice", "--shard", "2/4",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "carvana-t1-predict-shard-2-of-4" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == ["alice/carvana-t1-fold-0", "alice/carvana-t1-fold-1",  # tiny: k=2
                                      "alice/carvana-t1-predict-shard-2-of-4"]


# --- the 12-hour cap: killed kernels resume from their own mirrored output ------------------------------
# Runs a built entry script with a kill at a fixed point, from inside the process (SIGKILL: no `finally`,
# no atexit, as when Kaggle ends a session): KILL_AT=epochN dies after the first batch of epoch N;
# KILL_AT=chunkN dies while mirroring chunk N (its bytes appended to the mirrored part, its record not yet).
# KILL_AT=refinerN dies as the refiner draws its Nth training batch. CHUNK_ROWS sets the submission writer's chunk
# size, so 4 test images make 4 chunks; REFINER_STEPS the refiner's training batches; REFINE_NET=1 makes the tiny
# preset a net-refined one that learns from the fold's own training photos, as cpu is.
_KILLER = '''
import os, runpy, signal, sys
from pathlib import Path
mod = runpy.run_path(sys.argv[1], run_name="kaggle_kernel")
mod["unpack_toolkit"](Path(os.environ["KAGGLE_ROOT"]))
kill, chunk = os.environ.get("KILL_AT", ""), os.environ.get("CHUNK_ROWS")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if chunk:
    import competition.inference.writer as sub
    sub.CHUNK_ROWS = int(chunk)
if os.environ.get("REFINE_NET"):
    import competition.config as cf
    cf.PRESETS["tiny"] = {**cf.PRESETS["tiny"], "refine": "net", "refiner_from": "training"}
if os.environ.get("REFINER_STEPS"):
    import competition.training.refiner as rn
    steps, train_refiners = int(os.environ["REFINER_STEPS"]), rn.train_refiners
    rn.train_refiners = lambda *a, **k: train_refiners(*a, **{**k, "steps": steps})
if kill.startswith("epoch"):
    import keras
    import competition.training.callbacks as cb
    make, n = cb.make_callbacks, int(kill[5:])
    class Killer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == n and batch == 0:
                die()
    def patched(*args, **kwargs):
        callbacks, recorder = make(*args, **kwargs)
        return [*callbacks, Killer()], recorder
    cb.make_callbacks = patched
elif kill.startswith("refiner"):
    import competition.training.refiner as rn
    sampler, n = rn.crop_sampler, int(kill[7:])
    def counted(*args, **kwargs):
        draw, calls = sampler(*args, **kwargs), []
        def drawn(*a, **k):
            calls.append(1)
            if len(calls) == n:
                die()
            return draw(*a, **k)
        return drawn
    rn.crop_sampler = counted
elif kill.startswith("chunk"):
    import competition.inference.writer as mi
    write, n, calls = mi.write_text, int(kill[5:]), []
    def record(path, text):
        calls.append(path)
        if len(calls) == n:
            die()
        write(path, text)
    mi.write_text = record
sys.exit(mod["main"]() or 0)
'''


def _run_killable(script: Path, root: Path, **env: str) -> subprocess.CompletedProcess:
    killer = root.parent / "killer.py"
    killer.write_text(_KILLER)
    full = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "KILL_AT", "CHUNK_ROWS", "REFINER_STEPS", "REFINE_NET")}
    full.update(KAGGLE_ROOT=str(root), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", **env)
    return forkserver.run([sys.executable, str(killer), str(script)], cwd=root, env=full, timeout=400)


def _next_session(root: Path, user: str, slug: str) -> None:
    """A fresh session of the same kernel: the last output mounted as its own source, temp and working empty."""
    mount = root / "input" / "notebooks" / user / slug
    shutil.rmtree(mount, ignore_errors=True)
    mount.parent.mkdir(parents=True, exist_ok=True)
    (root / "working").rename(mount)
    shutil.rmtree(root / "temp", ignore_errors=True)
    (root / "working").mkdir()


def _api_mounted_root(root: Path, synth_zip_dir: Path) -> Path:
    """/kaggle as an API-pushed kernel sees it: the competition under input/competitions/."""
    comp = root / "input" / "competitions" / COMPETITION
    comp.mkdir(parents=True)
    for z in synth_zip_dir.glob("*.zip"):
        (comp / z.name).symlink_to(z)
    (root / "working").mkdir()
    return root


@pytest.fixture(scope="module")
def killed_and_resumed_fold(tmp_path_factory, synth_zip_dir) -> dict:
    """A train kernel (3 epochs) killed in epoch 2, then its next version resumed from the mirrored output."""
    tmp = tmp_path_factory.mktemp("capped")
    spec = KernelSpec(task="train", fold=0, preset="tiny", name="kr", user="alice", accelerator="none", epochs=3)
    folder = kernels.build(spec, tmp / "build")
    root = _api_mounted_root(tmp / "kaggle", synth_zip_dir)
    first = _run_killable(folder / "run.py", root, KILL_AT="epoch2")
    killed = {p.relative_to(root / "working").as_posix() for p in (root / "working").rglob("*") if p.is_file()}
    state = json.loads((root / "working" / "fold0" / "backup" / "state.json").read_text())
    import keras
    best = keras.models.load_model(root / "working" / "fold0" / "model.keras", compile=False)
    kernel_state = json.loads((root / "working" / kstate.STATE_FILE).read_text())
    _next_session(root, "alice", folder.name)
    second = _run_killable(folder / "run.py", root)
    return dict(spec=spec, root=root, slug=folder.name, first=first, killed=killed, state=state, best=best,
                kernel_state=kernel_state, second=second, working=root / "working")


def test_kernel_killed_mid_epoch_leaves_the_best_model_and_a_backup(killed_and_resumed_fold):
    r = killed_and_resumed_fold
    assert r["first"].returncode == -9, r["first"].stdout + r["first"].stderr  # SIGKILL: no `finally` ran
    assert "GPUs: 0" in r["first"].stdout  # --accelerator none: a CPU session, as asked
    assert r["state"]["epoch"] == 1 and r["state"]["backup"] == "epoch001.keras"
    assert {"config.json", "folds.csv", "fold0/model.keras", "fold0/history.csv", "fold0/curves.png",
            "fold0/backup/state.json", "fold0/backup/epoch001.keras", kstate.STATE_FILE} <= r["killed"]
    assert not any(name.rsplit("/", 1)[-1].startswith(".") for name in r["killed"])  # no half-written copy
    assert r["best"].input_shape[1:3] == (32, 48)  # a loadable model
    assert r["kernel_state"]["state"] == "running"


def test_next_kernel_version_resumes_the_fold_from_the_mounted_output(killed_and_resumed_fold):
    r = killed_and_resumed_fold
    proc, working = r["second"], r["working"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mount = r["root"] / "input" / "notebooks" / "alice" / r["slug"]
    assert f"resuming from the earlier version's output {mount}" in proc.stdout
    assert "after epoch 1 of 3" in proc.stdout and "Epoch 1/3" not in proc.stdout  # not started again
    summary = json.loads((working / "fold0" / "train.json").read_text())
    assert summary["epochs"] == 3  # what an uninterrupted run trains: the killed epoch counted once
    with open(working / "fold0" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["epoch"]) for r in rows] == [1, 2, 3]
    with open(mount / "fold0" / "history.csv") as f:
        assert next(csv.DictReader(f)) == rows[0]  # epoch 1 kept from the first session, not retrained
    assert not (working / "fold0" / "backup").exists() and not list(working.rglob(".*"))
    assert json.loads((working / kstate.STATE_FILE).read_text())["state"] == "complete"
    # scored with a tuned threshold, which the run's config (what predict uses) now holds
    score = json.loads((working / "fold0" / "score.json").read_text())
    assert json.loads((working / "config.json").read_text())["threshold"] == score["best_threshold"]


def test_predict_kernel_killed_mid_way_resumes_to_the_same_bytes(killed_and_resumed_fold, tmp_path, synth_zip_dir,
                                                                  monkeypatch):
    trained = killed_and_resumed_fold["working"]
    # the reference: an uninterrupted prediction with the same chunks, in this process
    from competition.inference import writer
    from competition.inference.predict import predict
    monkeypatch.setattr(writer, "CHUNK_ROWS", 1)
    on_kaggle.assemble_run([trained], tmp_path / "run")
    reference = predict(tmp_path / "run", str(synth_zip_dir), tmp_path / "ref" / "kr.csv.gz", folds=[0])

    spec = KernelSpec(task="predict", folds=[0], preset="tiny", name="kr", user="alice", accelerator="none")
    folder = kernels.build(spec, tmp_path / "build")
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    train_mount = root / "input" / "notebooks" / "alice" / "carvana-kr-fold-0"
    train_mount.parent.mkdir(parents=True)
    train_mount.symlink_to(trained, target_is_directory=True)
    first = _run_killable(folder / "run.py", root, KILL_AT="chunk3", CHUNK_ROWS="1")
    assert first.returncode == -9, first.stdout + first.stderr
    record = json.loads((root / "working" / "kr.csv.gz.part.json").read_text())
    part = (root / "working" / "kr.csv.gz.part").stat().st_size
    assert record["rows"] == 2 and part > record["bytes"]  # chunk 3 mirrored, its record not: a torn tail
    assert not (root / "working" / "kr.csv.gz").exists()

    _next_session(root, "alice", folder.name)
    second = _run_killable(folder / "run.py", root, CHUNK_ROWS="1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 of 4 rows already written" in second.stdout
    assert (root / "working" / "kr.csv.gz").read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in (root / "working").iterdir()) == [kstate.STATE_FILE, "kr.csv.gz",
                                                                     "kr.csv.gz.json"]


def test_train_kernel_killed_while_its_refiner_trains_keeps_the_fold_and_next_version_trains_only_the_refiner(
        tmp_path, synth_zip_dir):
    """cpu's train kernel's `train` trains the fold's refiner after the fold: killed then, the session's output
    still holds the finished fold (mirrored as it finished), and the next version's `train` finds the fold trained,
    trains the refiner and the kernel scores with it, without training the fold again."""
    spec = KernelSpec(task="train", fold=0, preset="tiny", name="kn", user="alice", accelerator="none", epochs=1)
    folder = kernels.build(spec, tmp_path / "build")
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    working = root / "working"
    first = _run_killable(folder / "run.py", root, KILL_AT="refiner2", REFINE_NET="1", REFINER_STEPS="3")
    assert first.returncode == -9, first.stdout + first.stderr  # SIGKILL: no `finally` ran
    assert "refiner: training fold0.keras on the training photos of folds [0]" in first.stdout
    killed = {p.relative_to(working).as_posix() for p in working.rglob("*") if p.is_file()}
    assert {"config.json", "folds.csv", "fold0/model.keras", "fold0/train.json", "fold0/history.csv",
            kstate.STATE_FILE} <= killed
    assert not any(name.startswith("refiner/") or name.rsplit("/", 1)[-1].startswith(".") for name in killed)
    assert json.loads((working / kstate.STATE_FILE).read_text())["state"] == "running"
    model = (working / "fold0" / "model.keras").read_bytes()

    _next_session(root, "alice", folder.name)
    second = _run_killable(folder / "run.py", root, REFINE_NET="1", REFINER_STEPS="3")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from the earlier version's output" in second.stdout
    assert "Epoch 1/1" not in second.stdout  # the fold is not trained again
    assert "refiner: training fold0.keras on the training photos of folds [0]" in second.stdout
    assert (working / "fold0" / "model.keras").read_bytes() == model
    record = json.loads((working / "refiner" / "refiner.json").read_text())
    assert record["fold0.keras"]["steps"] == 3 and record["fold0.keras"]["learns_from"] == "training"
    assert (working / "refiner" / "fold0.keras").is_file() and (working / "refiner" / "all.keras").is_file()
    assert json.loads((working / "fold0" / "score.json").read_text())["refine"] == "net"
    assert json.loads((working / kstate.STATE_FILE).read_text())["state"] == "complete"
    assert not list(working.rglob(".*")) and not list(working.rglob("backup"))


def test_a_train_kernel_scores_a_net_refined_fold_with_its_own_refiner_or_else_guided(tmp_path, capsys):
    """train trains a net-refined fold's refiner after it (stage.py); the kernel scores with it where it is there."""
    from competition.config import save_config
    from competition.runs.folder import refiner_path
    for cfg, has_refiner, expected in ((preset("unet"), False, []), (preset("demo"), False, []),
                                       (preset("cpu"), True, []),
                                       (preset("cpu"), False, ["--refine", "guided"]),
                                       (preset("cpu", refiner_from="held-out"), False, ["--refine", "guided"])):
        save_config(tmp_path / "config.json", cfg)
        refiner_path(tmp_path, 0).unlink(missing_ok=True)
        if has_refiner:
            refiner_path(tmp_path, 0).parent.mkdir(exist_ok=True)
            refiner_path(tmp_path, 0).write_bytes(b"net")
        assert on_kaggle.refine_for_score(tmp_path, 0) == expected, cfg.preset
    out = capsys.readouterr().out
    assert "its refiner failed (above)" in out and "its refiner needs the other folds" in out


def test_a_gathered_run_keeps_the_train_kernels_folds_and_refuses_kernels_that_split_otherwise(
        killed_and_resumed_fold, tmp_path):
    """A refiner that learns from a fold's training photos (cpu's) reads the run's folds.csv: the predict
    kernel's gathered run must carry the train kernel's, and two kernels with different splits cannot mix."""
    from competition.config import load_config
    from competition.runs.folder import training_ids
    trained = killed_and_resumed_fold["working"]
    run = tmp_path / "run"
    assert on_kaggle.assemble_run([trained], run) == [0]
    assert (run / "folds.csv").read_bytes() == (trained / "folds.csv").read_bytes()
    ids = training_ids(run, load_config(run / "config.json"), 0)
    from competition.data.folds import read_folds
    split = read_folds(trained / "folds.csv")
    assert ids and set(ids) == {i for i, k in split.items() if k != 0}

    other = tmp_path / "other"  # a second train kernel (fold 1) whose folds.csv was split differently
    shutil.copytree(trained, other)
    (other / "fold0").rename(other / "fold1")
    (other / "folds.csv").write_text((trained / "folds.csv").read_text().replace(",0\n", ",9\n", 1))
    with pytest.raises(UserError, match="folds.csv differs from the folds.csv of the train kernel gathered before"):
        on_kaggle.assemble_run([trained, other], tmp_path / "run2")


def test_predict_kernel_with_the_refiner_trains_it_once_and_a_killed_version_keeps_it(killed_and_resumed_fold,
                                                                                        tmp_path, synth_zip_dir):
    """--refine net: the kernel trains all.keras on the gathered fold's held-out predictions, puts it in its
    output before predicting, and the version after a kill uses that refiner instead of training another."""
    from competition.runs.folder import file_sha256
    spec = KernelSpec(task="predict", folds=[0], preset="tiny", name="kr", user="alice", accelerator="none",
                      refine="net")
    folder = kernels.build(spec, tmp_path / "build")
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    train_mount = root / "input" / "notebooks" / "alice" / "carvana-kr-fold-0"
    train_mount.parent.mkdir(parents=True)
    train_mount.symlink_to(killed_and_resumed_fold["working"], target_is_directory=True)
    first = _run_killable(folder / "run.py", root, KILL_AT="chunk2", CHUNK_ROWS="1", REFINER_STEPS="5")
    assert first.returncode == -9, first.stdout + first.stderr
    assert "refiner: training all.keras on the held-out photos of folds [0]" in first.stdout
    refiner = root / "working" / "refiner" / "all.keras"
    digest = file_sha256(refiner)
    assert json.loads((root / "working" / "refiner" / "refiner.json").read_text())["all.keras"]["steps"] == 5

    _next_session(root, "alice", folder.name)
    second = _run_killable(folder / "run.py", root, CHUNK_ROWS="1", REFINER_STEPS="5")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "all.keras is up to date" in second.stdout and "training all.keras" not in second.stdout
    assert "1 of 4 rows already written" in second.stdout  # the rows made with that refiner are kept
    assert json.loads((root / "working" / "kr.csv.gz.json").read_text())["refiner"] == digest
    assert file_sha256(root / "working" / "refiner" / "all.keras") == digest
    from competition.data.layout import open_dataset
    names = [f"{i}.jpg" for i in open_dataset(synth_zip_dir).test_ids]
    rows, problems = validate(root / "working" / "kr.csv.gz", names)
    assert rows == len(names) and problems == []

    # pushed again without the refiner (same slug): the finished file it restores was made otherwise
    plain = kernels.build(KernelSpec(task="predict", folds=[0], preset="tiny", name="kr", user="alice",
                                     accelerator="none", refine="none"), tmp_path / "build-plain")
    assert plain.name == folder.name
    _next_session(root, "alice", folder.name)
    third = _run_killable(plain / "run.py", root)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "kr.csv.gz was made with refinement net: predicting again" in third.stdout
    assert "refine" not in json.loads((root / "working" / "kr.csv.gz.json").read_text())


def test_a_restored_submission_made_otherwise_is_dropped_finished_or_partial(tmp_path):
    written = tmp_path / "kr.csv.gz"
    for path, text in ((written, "csv"), (tmp_path / "kr.csv.gz.json", '{"tta": "hflip", "folds": [0, 1]}'),
                       (tmp_path / "kr.csv.gz.part", "rows"),
                       (tmp_path / "kr.csv.gz.part.json", '{"meta": {"tta": "none", "folds": [0, 1]}, "rows": 1}')):
        path.write_text(text)
    assert on_kaggle.discard_made_otherwise(written, "hflip", None, [1, 0]) == [tmp_path / "kr.csv.gz.part",
                                                                             tmp_path / "kr.csv.gz.part.json"]
    assert written.is_file()  # made as asked: kept
    assert on_kaggle.discard_made_otherwise(written, "hflip", "guided", None) == [written, tmp_path / "kr.csv.gz.json"]
    assert on_kaggle.discard_made_otherwise(written, "none", "net", [2]) == []  # nothing left to compare


def test_a_restored_blend_submission_is_compared_member_by_member(tmp_path):
    """A blend's record holds each run's refinement and folds (blend.predict_blend's meta): a blend kernel pushed
    again as it was keeps what it wrote, and drops it when a run was refined otherwise or --folds changed."""
    from competition.inference.writer import refine_meta
    written = tmp_path / "b.csv.gz"
    record = {"tta": "hflip", "folds": [[0, 1], [2]], **refine_meta("guided", "guided")}  # run B is B@2
    for path, text in ((written, "csv"), (tmp_path / "b.csv.gz.json", json.dumps(record))):
        path.write_text(text)
    assert on_kaggle.discard_made_otherwise(written, "hflip", "guided", [1, 0]) == []
    assert written.is_file()
    assert on_kaggle.discard_made_otherwise(written, "hflip", "none", None) == [written, tmp_path / "b.csv.gz.json"]
    (tmp_path / "b.csv.gz.json").write_text(json.dumps({**record, **refine_meta("guided", "none")}))
    written.write_text("csv")
    assert on_kaggle.discard_made_otherwise(written, "hflip", "guided", [0, 1]) == [written, tmp_path / "b.csv.gz.json"]
    (tmp_path / "b.csv.gz.json").write_text(json.dumps(record))
    written.write_text("csv")
    assert on_kaggle.discard_made_otherwise(written, "hflip", "guided", [0, 1, 2]) != []  # other --folds


def test_refine_is_for_predict_kernels_and_net_not_for_blends(tmp_path):
    with pytest.raises(UserError, match="for predict kernels"):
        kernels.build(KernelSpec(task="train", preset="tiny", name="kt", user="alice", refine="guided"), tmp_path)
    with pytest.raises(UserError, match="a blend kernel cannot use the refiner net yet"):
        kernels.build(KernelSpec(task="predict", preset="tiny", user="alice", blend=["a", "b"], refine="net"),
                      tmp_path)
    with pytest.raises(UserError, match="unknown refinement 'sharp'"):
        kernels.build(KernelSpec(task="predict", preset="tiny", name="kt", user="alice", refine="sharp"), tmp_path)


# --- a resume that cannot silently restart ------------------------------------------------------------
def _state(push: int, state: str = "time-limited", epochs: int = 3, **kw) -> bytes:
    record = kstate.state_record(state, f"fold 0 after epoch {epochs}", {"name": "t1", "task": "train", "fold": 0,
                                                                          "kernel": f"{USER}/carvana-t1-fold-0",
                                                                          "push": push, **kw}, {"epochs": epochs})
    return json.dumps(record).encode()


def _settings(script: str) -> dict:
    import ast
    [line] = [x for x in script.splitlines() if x.startswith("SETTINGS = ")]
    return ast.literal_eval(line[len("SETTINGS = "):])


def test_every_push_is_recorded_and_a_repush_expects_the_latest_known_output(server, tmp_path):
    spec = KernelSpec(preset="tiny", name="t1")
    kernels.push(spec, out_root=tmp_path / "build")
    first = _settings(server.sent[-1][1]["text"])
    assert first["push"] == 1 and first["expect"] is None and first["fresh"] is False
    server.save_answer = {"versionNumber": 2}
    server.outputs = {kstate.STATE_FILE: _state(1, epochs=7)}
    kernels.push(spec, out_root=tmp_path / "build")
    second = _settings(server.sent[-1][1]["text"])
    assert second["push"] == 2 and second["expect"] == {"push": 1, "state": "time-limited", "progress": {"epochs": 7}}
    assert "--fresh" in second["fix"] and "kernel push --task train --run t1 --preset tiny --fold 0" in second["fix"]
    record = json.loads((tmp_path / "runs" / "t1" / "kernels.json").read_text())
    kernel = record["kernels"]["carvana-t1-fold-0"]
    assert [(p["push"], p["version"]) for p in kernel["pushes"]] == [(1, 1), (2, 2)]
    assert kernel["state"]["push"] == 1 and kernel["fold"] == 0 and kernel["ref"] == f"{USER}/carvana-t1-fold-0"
    # --fresh: nothing expected, the kernel told to start over
    kernels.push(KernelSpec(preset="tiny", name="t1", fresh=True), out_root=tmp_path / "build")
    third = _settings(server.sent[-1][1]["text"])
    assert third["fresh"] is True and third["expect"] is None and third["push"] == 3


def test_a_repush_while_the_kernel_runs_or_a_refused_push_leaves_the_record_untouched(server, tmp_path):
    spec = KernelSpec(preset="tiny", name="t1")
    kernels.push(spec, out_root=tmp_path / "build")
    path = tmp_path / "runs" / "t1" / "kernels.json"
    before = path.read_bytes()
    server.status_answer = {"status": "RUNNING"}
    with pytest.raises(UserError) as e:
        kernels.push(spec, out_root=tmp_path / "build")
    assert "is RUNNING: a new version now could not resume" in _one_line(e)
    server.status_answer = {"status": "COMPLETE"}
    server.save_answer = {"error": "Maximum batch GPU session count of 2 reached."}
    with pytest.raises(UserError) as e:
        kernels.push(spec, out_root=tmp_path / "build")
    assert "Maximum batch GPU session count" in _one_line(e)
    assert path.read_bytes() == before and [e for e, _ in server.sent].count("SaveKernel") == 2


def test_resume_check_resumes_from_the_expected_output_and_not_from_another(tmp_path, capsys):
    mount = tmp_path / "input" / "notebooks" / USER / "carvana-t1-fold-0"
    mount.mkdir(parents=True)
    (mount / kstate.STATE_FILE).write_bytes(_state(2, epochs=9))
    settings = {"name": "t1", "task": "train", "fold": 0, "kernel": f"{USER}/carvana-t1-fold-0", "push": 3,
                "expect": {"push": 2, "state": "time-limited", "progress": {"epochs": 9}}, "fix": "FIX"}
    assert on_kaggle.check_resume(tmp_path / "input", settings) is True
    assert "found push 2 (time-limited, epochs 9)" in capsys.readouterr().out
    assert on_kaggle.check_resume(tmp_path / "input", {**settings, "fresh": True}) is False
    assert on_kaggle.check_resume(tmp_path / "input", {**settings, "expect": None}) is True
    with pytest.raises(UserError) as e:  # a newer push known than the one mounted
        on_kaggle.check_resume(tmp_path / "input", {**settings, "expect": {"push": 3}})
    assert "found push 2 (time-limited, epochs 9)" in _one_line(e) and "an older version" in str(e.value)
    with pytest.raises(UserError, match="another run's output"):
        on_kaggle.check_resume(tmp_path / "input", {**settings, "fold": 1})


@pytest.mark.parametrize("mounted, found", [(None, "found nothing under"),
                                            (1, "found push 1 (time-limited, epochs 3) at")])
def test_a_repushed_kernel_that_finds_nothing_or_an_older_output_stops_before_any_training(
        server, tmp_path, synth_zip_dir, mounted, found):
    spec = KernelSpec(preset="tiny", name="t1", epochs=None)
    for push in (1, 2):
        server.outputs = {kstate.STATE_FILE: _state(push - 1)} if push > 1 else {}
        kernels.push(spec, out_root=tmp_path / "build")
    server.outputs = {kstate.STATE_FILE: _state(2)}
    kernels.push(spec, out_root=tmp_path / "build")  # push 3 expects push 2's output
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    if mounted is not None:
        mount = root / "input" / "notebooks" / USER / "carvana-t1-fold-0"
        mount.mkdir(parents=True)
        (mount / kstate.STATE_FILE).write_bytes(_state(mounted))
    proc = _run_kernel(tmp_path / "build" / "carvana-t1-fold-0" / "run.py", root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: resume check of {USER}/carvana-t1-fold-0 push 3: expected the output of push 2")
    assert found in line and "--fresh`" in line and "kernel push --task train --run t1" in line
    assert "versions:" not in proc.stdout  # stopped before TensorFlow was even imported
    # its output holds only why it stopped (earlier versions' outputs are Kaggle's, untouched), for `kernel status`
    assert [p.name for p in (root / "working").iterdir()] == [kstate.STATE_FILE]
    stopped = json.loads((root / "working" / kstate.STATE_FILE).read_text())
    assert stopped["state"] == "stopped" and stopped["detail"].startswith("resume check of ")


# --- credentials ----------------------------------------------------------------------------------
def test_the_kaggle_key_is_in_nothing_written_or_sent(server, tmp_path, monkeypatch, capsys):
    """The key authenticates requests (their headers) and goes nowhere else: not into run.py or its embedded
    package, kernel-metadata.json, a request body, a downloaded output or anything printed."""
    key = "secret-key-5f1d9c2e7a"
    monkeypatch.setenv("KAGGLE_KEY", key)
    kernels.push(KernelSpec(task="train", fold=0, preset="tiny", name="t1"), out_root=tmp_path / "build")
    kernels.push(KernelSpec(task="predict", folds=[0], preset="tiny", name="t1"), out_root=tmp_path / "build")
    server.outputs = {"config.json": json.dumps(preset("tiny").to_json()).encode(), "fold0/model.keras": b"m"}
    kernels.output(KernelSpec(preset="tiny", name="t1"), dest=tmp_path / "runs" / "t1")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run.py" for p in written) and any(p.name == kbuild.METADATA_FILE for p in written)
    for p in written:
        assert key.encode() not in p.read_bytes(), p
    for script in (p for p in written if p.name == "run.py"):
        package = _embedded_package(script.read_text())
        assert all(key.encode() not in package.read(n) for n in package.namelist())
    assert [e for e, _ in server.sent].count("SaveKernel") == 2
    assert key not in json.dumps(server.sent)
    out = capsys.readouterr()
    assert key not in out.out + out.err
