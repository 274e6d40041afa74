"""The resume that does not depend on self-sources: `kernel checkpoint` versions an ended kernel's output as a private
dataset through the real kaggle package (only its HTTP faked, tests/fake_kaggle.py), `kernel push --resume-from
dataset` lists it, and the built entry script checks and restores it on a temporary stand-in for /kaggle."""
from __future__ import annotations

import ast
import io
import json
import zipfile
from pathlib import Path

import pytest

import fake_kaggle
from competition.kaggle import state as kstate, build as kbuild
from competition.kaggle import checkpoint as kernel_checkpoint, spec as kernel_spec, kernels
from competition.cli import main
from competition.config import preset
from competition.base.errors import UserError
from competition.kaggle.spec import KernelSpec
from fake_kaggle import USER
from test_kernels import _api_mounted_root, _run_kernel

server = fake_kaggle.server  # the fake Kaggle fixture
SPEC = KernelSpec(preset="tiny", name="t1")
REF = f"{USER}/carvana-t1-fold-0"
DATASET = f"{USER}/carvana-t1-fold-0-checkpoint"


def _state(push: int, state: str = "time-limited", **progress) -> bytes:
    settings = {"name": "t1", "task": "train", "fold": 0, "kernel": REF, "push": push}
    return json.dumps(kstate.state_record(state, "fold 0", settings, progress or {"epochs": 3})).encode()


def _keras() -> bytes:
    """A file that passes the toolkit's .keras check (a zip with a Keras 3 model's members); never loaded here."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", b"weights")
    return buf.getvalue()


def _backup_output(push: int = 1, epochs: int = 3) -> dict[str, bytes]:
    """A train kernel's output stopped after `epochs` epochs: the best model and the resumable backup."""
    return {kstate.STATE_FILE: _state(push, epochs=epochs, finished=False),
            "config.json": json.dumps(preset("tiny").to_json()).encode(), "fold0/model.keras": _keras(),
            "fold0/history.csv": b"epoch,loss\n", "fold0/backup/state.json": json.dumps(
                {"epoch": epochs, "backup": f"epoch{epochs:03d}.keras", "best": 0.9, "best_epoch": epochs, "wait": 0,
                 "stopped": False, "history": []}).encode(),
            f"fold0/backup/epoch{epochs:03d}.keras": _keras()}


def _record(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "t1" / "kernels.json"


def _settings(script: str) -> dict:
    [line] = [x for x in script.splitlines() if x.startswith("SETTINGS = ")]
    return ast.literal_eval(line[len("SETTINGS = "):])


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture
def pushed(server, tmp_path) -> Path:
    """Push 1 of fold 0 recorded in runs/t1/kernels.json; returns the build folder."""
    kernels.push(SPEC, out_root=tmp_path / "build")
    return tmp_path / "build"


# --- kernel checkpoint ----------------------------------------------------------------------------------
def test_checkpoint_creates_a_private_dataset_of_the_output_then_versions_it(server, pushed, tmp_path, capsys):
    server.outputs = _backup_output(push=1, epochs=3)
    assert kernel_checkpoint.checkpoint(SPEC) == DATASET
    create = server.body("CreateDataset")
    assert create["isPrivate"] is True and create["ownerSlug"] == USER and create["licenseName"] == "CC0-1.0"
    assert f"{USER}/{create['slug']}" == DATASET and 6 <= len(create["title"]) <= 50
    [version1] = server.datasets[DATASET]
    assert sorted(version1) == ["config.json", "fold0.zip", kstate.STATE_FILE]  # no log, no metadata file
    assert json.loads(version1[kstate.STATE_FILE])["progress"] == {"epochs": 3, "finished": False}
    members = set(zipfile.ZipFile(io.BytesIO(version1["fold0.zip"])).namelist())
    assert {"model.keras", "backup/state.json", "backup/epoch003.keras"} <= members  # what resuming needs
    record = json.loads(_record(tmp_path).read_text())["kernels"]["carvana-t1-fold-0"]["checkpoint"]
    assert record["dataset"] == DATASET and record["versions"] == 1 and record["state"]["progress"]["epochs"] == 3
    assert "--resume-from dataset" in capsys.readouterr().out

    server.outputs = _backup_output(push=2, epochs=5)  # a later version stopped too: the same dataset, versioned
    kernel_checkpoint.checkpoint(SPEC)
    assert [e for e, _ in server.sent].count("CreateDataset") == 1
    assert server.body("CreateDatasetVersion")["datasetSlug"] == create["slug"]
    assert len(server.datasets[DATASET]) == 2
    record = json.loads(_record(tmp_path).read_text())["kernels"]["carvana-t1-fold-0"]["checkpoint"]
    assert record["versions"] == 2 and record["state"]["push"] == 2 and record["state"]["progress"]["epochs"] == 5


def test_checkpoint_titles_fit_in_50_characters_and_differ_from_the_kernels():
    long = "resnet50-imagenet-frozen-3-epochs-1280x1918-lovasz-and-dice-v2"
    specs = [KernelSpec(name=long, fold=1, epochs=1), KernelSpec(task="predict", name=long, shard=(11, 16)), SPEC]
    for spec in specs:
        title = kernel_spec.checkpoint_title(spec)
        assert 6 <= len(title) <= 50 and title.endswith(" checkpoint") and title != kernel_spec.title(spec)
        assert kernel_spec.checkpoint_ref(spec, "u") == f"u/{kernel_spec.slugify(title)}"


def test_an_error_version_with_a_state_is_checkpointed_and_says_so(server, pushed, capsys):
    server.status_answer = {"status": "ERROR", "failureMessage": "Your notebook tried to allocate more memory"}
    server.outputs = _backup_output(epochs=2)
    kernel_checkpoint.checkpoint(SPEC)
    [note] = [line for line in capsys.readouterr().out.splitlines() if "ended in ERROR" in line]
    assert "tried to allocate more memory" in note and "epochs 2" in note and "checkpointing it" in note
    assert len(server.datasets[DATASET]) == 1


@pytest.mark.parametrize("outputs, says", [
    ({}, "left no kernel-state.json in its output: nothing to checkpoint, nothing created"),
    ({kstate.STATE_FILE: _state(1, "running", epochs=0)}, "but no fold0/backup/state.json"),
], ids=["no-state", "state-without-backup"])
def test_an_error_version_with_nothing_to_resume_from_creates_nothing(server, pushed, tmp_path, outputs, says):
    server.status_answer = {"status": "ERROR", "failureMessage": "killed"}
    server.outputs = outputs
    before = _record(tmp_path).read_bytes()
    with pytest.raises(UserError) as e:
        kernel_checkpoint.checkpoint(SPEC)
    assert says in _one_line(e)
    assert not {"StartBlobUpload", "CreateDataset", "CreateDatasetVersion"} & {e for e, _ in server.sent}
    assert _record(tmp_path).read_bytes() == before and not server.datasets
    assert not list((tmp_path / "runs" / "t1").glob(".checkpoint-*"))  # its staging folder removed


def test_a_running_kernel_is_checkpointed_after_it_ends(server, pushed, tmp_path):
    server.status_answer = {"status": "RUNNING"}
    before, sent = _record(tmp_path).read_bytes(), len(server.sent)
    with pytest.raises(UserError) as e:
        kernel_checkpoint.checkpoint(SPEC)
    assert f"{REF} is RUNNING" in _one_line(e) and "checkpoint it after it ends" in str(e.value)
    assert [e for e, _ in server.sent[sent:]] == ["GetKernelSessionStatus"]  # its output not even listed
    assert _record(tmp_path).read_bytes() == before


def test_an_output_of_another_run_is_not_checkpointed(server, pushed):
    server.outputs = {**_backup_output(), kstate.STATE_FILE: json.dumps(
        kstate.state_record("time-limited", "", {"name": "other", "task": "train", "fold": 0, "kernel": REF,
                                                    "push": 1}, {"epochs": 3})).encode()}
    with pytest.raises(UserError, match="is another kernel's: run 'other'"):
        kernel_checkpoint.checkpoint(SPEC)
    assert not server.datasets


@pytest.mark.parametrize("args, start", [
    (["--user", "alice"], f"error: alice/carvana-t1-fold-0 is not yours: your Kaggle credentials are {USER}'s"),
    (["--accelerator", "a100"], "error: unknown --accelerator 'a100'"),
    (["--run", "t2"], f"error: Kaggle knows no kernel {USER}/carvana-t2-fold-0 of yours (it answers 403)"),
    (["--resume-from", "disk"], "error: kernel: --resume-from: invalid choice: 'disk' (choose from 'self', 'dataset')"),
], ids=["not-the-users-kernel", "unknown-accelerator", "no-push-recorded", "unknown-resume-source"])
def test_bad_checkpoint_input_is_one_line_exit_2_and_touches_nothing(server, pushed, tmp_path, capsys, args, start):
    server.outputs = _backup_output()
    before = _record(tmp_path).read_bytes()
    capsys.readouterr()
    argv = ["kernel", "checkpoint", "--preset", "tiny", *(["--run", "t1"] if "--run" not in args else []), *args]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(start), line
    assert _record(tmp_path).read_bytes() == before and not server.datasets


def test_a_missing_token_is_one_line_exit_2(server, pushed, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    before = _record(tmp_path).read_bytes()
    capsys.readouterr()
    assert main(["kernel", "checkpoint", "--preset", "tiny", "--run", "t1", "--user", USER]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: no Kaggle credentials") and "KAGGLE_API_TOKEN" in line
    assert _record(tmp_path).read_bytes() == before and not server.datasets


# --- push --resume-from dataset -------------------------------------------------------------------------
def test_push_from_the_checkpoint_lists_the_dataset_and_expects_its_exact_state(server, pushed, tmp_path):
    fix = _settings(server.sent[-1][1]["text"])["fix"]  # the self-source push names the checkpoint as a fix
    assert "`python -m competition kernel checkpoint --task train --run t1 --preset tiny --fold 0`" in fix
    assert "--resume-from dataset`" in fix and "--fresh`" in fix
    server.outputs = _backup_output(push=1, epochs=3)
    kernel_checkpoint.checkpoint(SPEC)
    server.save_answer = {"versionNumber": 2}
    kernels.push(KernelSpec(preset="tiny", name="t1", resume_from="dataset"), out_root=pushed)
    body = [b for e, b in server.sent if e == "SaveKernel"][-1]
    assert body["datasetDataSources"] == [DATASET] and body.get("kernelDataSources", []) == []  # not its own output
    settings = _settings(body["text"])
    assert settings["dataset"] == DATASET and settings["push"] == 2
    assert settings["expect"] == {"push": 1, "state": "time-limited", "progress": {"epochs": 3, "finished": False}}
    assert "--resume-from dataset`" in settings["fix"] and "kernel checkpoint" in settings["fix"]
    meta = json.loads((pushed / "carvana-t1-fold-0" / kbuild.METADATA_FILE).read_text())
    assert meta["dataset_sources"] == [DATASET] and meta["kernel_sources"] == []


def test_push_from_a_checkpoint_that_is_missing_or_not_ready_is_refused(server, pushed, tmp_path):
    spec = KernelSpec(preset="tiny", name="t1", resume_from="dataset")
    before = _record(tmp_path).read_bytes()
    with pytest.raises(UserError) as e:
        kernels.push(spec, out_root=pushed)
    assert "records no checkpoint of carvana-t1-fold-0" in _one_line(e) and "kernel checkpoint" in str(e.value)
    assert _record(tmp_path).read_bytes() == before
    server.outputs = _backup_output()
    kernel_checkpoint.checkpoint(spec)
    server.dataset_status = "BLOBS_RECEIVED"
    with pytest.raises(UserError) as e:
        kernels.push(spec, out_root=pushed)
    assert f"the checkpoint {DATASET} is blobs_received on Kaggle, not ready" in _one_line(e)
    assert [e for e, _ in server.sent].count("SaveKernel") == 1


def test_the_queue_resumes_from_self_sources_only(server, tmp_path):
    from competition.kaggle import queue as kernel_queue
    with pytest.raises(UserError, match="push a fold from its checkpoint alone"):
        kernel_queue.push_all(KernelSpec(preset="tiny", name="t1", resume_from="dataset"), out_root=tmp_path)


# --- on Kaggle: the built entry script with the checkpoint mounted ---------------------------------------
def _push_from_checkpoint(server, build: Path, outputs: dict[str, bytes]) -> Path:
    """Checkpoint `outputs`, push from the checkpoint; returns the built run.py (what Kaggle would run; it does not
    score the fold, whose model here is no real one)."""
    server.outputs = outputs
    kernel_checkpoint.checkpoint(SPEC)
    server.save_answer = {"versionNumber": 2}
    kernels.push(KernelSpec(preset="tiny", name="t1", resume_from="dataset", score=False, accelerator="none"),
                 out_root=build)  # no GPU in the stand-in /kaggle
    return build / "carvana-t1-fold-0" / "run.py"


def _mount(root: Path, files: dict[str, bytes], unpack: bool) -> Path:
    """The dataset as an API-pushed kernel sees it, at input/datasets/<user>/<slug>/, its folders unpacked or not."""
    mount = root / "input" / "datasets" / DATASET
    for name, data in files.items():
        if unpack and name.endswith(".zip"):
            zipfile.ZipFile(io.BytesIO(data)).extractall(mount / name[:-4])
            continue
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_bytes(data)
    return mount


@pytest.mark.parametrize("unpack", [True, False], ids=["unpacked", "left-zipped"])
def test_the_kernel_restores_the_checkpoint_and_resumes_from_it(server, pushed, tmp_path, synth_zip_dir, unpack):
    """A version killed after its fold finished (ERROR): the checkpoint holds the trained fold, and the kernel pushed
    from it restores the fold from the dataset and does not train it again (cheap: no epoch runs)."""
    outputs = {kstate.STATE_FILE: _state(1, "running", epochs=1, finished=True),
               "config.json": json.dumps(preset("tiny").to_json()).encode(), "fold0/model.keras": _keras(),
               "fold0/train.json": json.dumps({"fold": 0, "epochs": 1, "best": 0.5}).encode()}
    server.status_answer = {"status": "ERROR", "failureMessage": "killed"}
    script = _push_from_checkpoint(server, pushed, outputs)
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    mount = _mount(root, server.datasets[DATASET][-1], unpack)
    proc = _run_kernel(script, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (f"resume check of {REF} push 2: found push 1 (running, epochs 1) at {mount} (checkpoint {DATASET}), as "
            f"expected") in proc.stdout
    assert "is already trained" in proc.stdout and "Epoch 1/" not in proc.stdout
    working = root / "working"
    assert (working / "fold0" / "model.keras").read_bytes() == outputs["fold0/model.keras"]
    assert (working / "fold0" / "train.json").is_file() and not list(working.glob("*.zip"))
    state = json.loads((working / kstate.STATE_FILE).read_text())
    assert state["state"] == "complete" and state["push"] == 2


@pytest.mark.parametrize("mounted, found", [(None, "found nothing under"),
                                            (0, "found push 0 (time-limited, epochs 2) at"),
                                            (1, "found push 1 (time-limited, epochs 2) at")],
                         ids=["nothing", "older-push", "same-push-other-progress"])
def test_a_kernel_whose_checkpoint_is_missing_or_older_stops_before_tensorflow(server, pushed, tmp_path,
                                                                              synth_zip_dir, mounted, found):
    script = _push_from_checkpoint(server, pushed, _backup_output(push=1, epochs=3))
    root = _api_mounted_root(tmp_path / "kaggle", synth_zip_dir)
    if mounted is not None:  # Kaggle mounted the dataset's earlier version
        _mount(root, {**server.datasets[DATASET][-1], kstate.STATE_FILE: _state(mounted, epochs=2)}, False)
    proc = _run_kernel(script, root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: resume check of {REF} push 2: expected the checkpoint {DATASET} holding push 1 "
                           f"(time-limited, epochs 3)")
    what = {None: "nothing", 0: "an older version", 1: "another version"}[mounted]
    assert found in line and f"Kaggle mounted {what};" in line and "kernel checkpoint" in line and "--fresh`" in line
    assert "versions:" not in proc.stdout  # stopped before TensorFlow was even imported
    # its output holds only why it stopped (earlier versions' outputs are Kaggle's, untouched), for `kernel status`
    assert [p.name for p in (root / "working").iterdir()] == [kstate.STATE_FILE]
    stopped = json.loads((root / "working" / kstate.STATE_FILE).read_text())
    assert stopped["state"] == "stopped" and stopped["detail"].startswith("resume check of ")
