"""Kaggle kernel: train one fold of the Carvana toolkit on Kaggle's GPUs.

`python -m competition kernel build --task train --fold K` fills SETTINGS and PACKAGE_ZIP below and
writes the result, with its kernel-metadata.json, to kernels/build/<slug>/. On Kaggle this script:
  1. unpacks the embedded `competition` package (no pip, no internet) and puts it on sys.path;
  2. prints the Python/TensorFlow/Keras versions and the GPUs it got, warns when they are fewer or other
     than the accelerator asked for, and stops with one clear line if they cannot run the toolkit;
  3. checks, before anything else, what Kaggle mounted as this kernel's own earlier output: when the host knows an
     earlier push left one (SETTINGS["expect"]) and the mount holds nothing or an older push's kernel-state.json,
     it stops at once with one line and the command that fixes it (no GPU hour spent; --fresh starts over);
     when this kernel's earlier version left an output (the kernel lists its own slug as a source, mounted
     at /kaggle/input/notebooks/<user>/<slug>/), copies it into the run folder and into /kaggle/working, so
     the fold resumes after its last finished epoch (optimizer, learning rate, early-stopping count intact);
     pushed with --resume-from dataset, it reads the same from the private dataset `kernel checkpoint` made of
     that output (SETTINGS["dataset"], at /kaggle/input/datasets/<user>/<slug>/) and must find exactly the
     expected state there;
  4. runs the toolkit's own CLI, `train --preset P --name N --fold K --time-limit T --mirror /kaggle/working`,
     on the competition's zips read in place from /kaggle/input (competitions/carvana-image-masking-challenge/
     or any other layout Kaggle mounts it in); with an encoder, its weights come from the internet (imagenet:
     the kernel is built with enable_internet) or from the file in the attached --weights-dataset, passed as
     --encoder-weights PATH; the run and its image cache live in /kaggle/temp. After every
     epoch the best model.keras, history.csv, curves.png and the resumable backup are copied (atomically)
     into /kaggle/working, so a session killed at any instant keeps them; T is Kaggle's 12 hours (or
     SETTINGS["session_hours"]) less a margin for scoring and copying, less the time used so far, and training
     stops before an epoch as long as the slowest measured would cross it: the fold stops cleanly and
     resumably before Kaggle kills it;
     `train` also trains the fold's refiner net right after the fold where the run refines with one learnt from
     the fold's own training photos (cpu's; competition/stage.py): killed then, the next version finds the fold
     trained and trains the refiner alone;
  5. scores the finished fold (with its refiner where it has one; one learning from other folds scores guided), tuning
     its threshold (the run's config then holds the tuned threshold that predict uses), and copies the
     finished run folder (config.json, folds.csv, fold<K>/ with model.keras, history.csv, curves.png,
     oof.npz, train.json, score files) to /kaggle/working; kernel-state.json there says "complete", or
     "time-limited" (push the same kernel again to resume).
It writes nothing outside /kaggle/working and /kaggle/temp. KAGGLE_ROOT (default /kaggle) moves all of
it, e.g. to run this file locally on a copy of the inputs.
"""
import base64
import io
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

SETTINGS = {"task": "train", "name": "unet", "preset": "unet", "fold": 0, "epochs": None, "score": True, "kernel": None, "accelerator": "t4x2"}
PACKAGE_ZIP = ""  # `kernel build` fills this line: the competition package, zipped, in base64


def unpack_toolkit(root: Path) -> Path:
    """Put the embedded toolkit on sys.path (the bare template: a copy attached under input/)."""
    if PACKAGE_ZIP.strip():
        dest = root / "temp" / "toolkit"
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(base64.b64decode("".join(PACKAGE_ZIP.split())))) as zf:
            zf.extractall(dest)
    else:
        found = [p for pattern in ("*/competition/__init__.py", "datasets/*/*/competition/__init__.py",
                                   "notebooks/*/*/competition/__init__.py")
                 for p in sorted((root / "input").glob(pattern))]
        if not found:
            sys.exit("error: this is the unfilled template: build the kernel with "
                     "`python -m competition kernel build` (or attach the toolkit's competition/ as a dataset)")
        dest = found[0].parent.parent
    sys.path.insert(0, str(dest))
    return dest / "competition"


def _cache(temp: Path) -> str:
    """--cache: a folder in /kaggle/temp, but at full resolution (~50 GB of arrays, more than a session's disk)
    the files' encoded bytes held in memory, decoded every epoch."""
    from competition.config import preset
    cfg = preset(SETTINGS["preset"])
    return "memory" if cfg.height * cfg.width >= 1280 * 1920 else str(temp / "cache")


def main() -> int:
    started = time.monotonic()
    root = Path(os.environ.get("KAGGLE_ROOT") or "/kaggle")
    working, temp = root / "working", root / "temp"
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    package = unpack_toolkit(root)
    from competition.__main__ import main as cli
    from competition.base.errors import UserError
    from competition.kaggle import on_kaggle
    from competition.kaggle.machines import budget_args
    from competition.kaggle.state import write_kernel_state
    from competition.runs import resume
    print(f"toolkit {SETTINGS.get('toolkit', '?')} from {package}; settings {SETTINGS}", flush=True)
    name, fold = SETTINGS["name"], str(SETTINGS["fold"])
    runs = temp / "runs"
    try:  # first, before any GPU time: an older or missing output where one is known stops the kernel here
        resuming = on_kaggle.check_resume(root / "input", SETTINGS)
        on_kaggle.check_environment(SETTINGS.get("accelerator"), SETTINGS.get("accept_machine", False))
        data = on_kaggle.find_competition_input(root / "input")
        weights = SETTINGS.get("encoder_weights")
        if SETTINGS.get("weights_dataset"):  # the encoder's weights file from an attached dataset, not the internet
            weights = str(on_kaggle.find_weights_file(root / "input", SETTINGS["weights_dataset"], SETTINGS["encoder"]))
        if resuming:
            on_kaggle.restore_run(root / "input", on_kaggle.resume_source(SETTINGS), [runs / name, working])
    except UserError as e:
        return on_kaggle.stop(working, SETTINGS, e)

    fold_dir = runs / name / f"fold{fold}"
    write_kernel_state(working, "running", f"fold {fold}", SETTINGS, resume.progress(fold_dir))
    limit = on_kaggle.time_limit("train", started, session_hours=SETTINGS.get("session_hours"),
                                 cap=SETTINGS.get("time_limit"))
    args = ["train", "--preset", SETTINGS["preset"], "--name", name, "--fold", fold, "--data", str(data),
            "--runs", str(runs), "--cache", _cache(temp), "--mirror", str(working), "--time-limit", limit,
            "--mixed-precision"]  # float16 on the T4s' tensor cores (bfloat16 or float32 on a CPU session)
    args += budget_args(SETTINGS.get("budget"), SETTINGS.get("epochs"), limit)  # the fold planned to fit
    if SETTINGS.get("epochs"):
        args += ["--epochs", str(SETTINGS["epochs"])]
    if SETTINGS.get("encoder"):
        args += ["--encoder", SETTINGS["encoder"]] + (["--encoder-weights", weights] if weights else [])
    if SETTINGS.get("freeze_encoder"):
        args += ["--freeze-encoder", str(SETTINGS["freeze_encoder"])]
    if SETTINGS.get("filters"):
        args += ["--filters", str(SETTINGS["filters"])]
    try:
        rc = cli(args)  # the fold, then (a run refined by the net, learning from its training photos) its refiner
        finished = resume.is_finished(fold_dir)
        if rc == 0 and not finished:
            epoch = resume.read_state(fold_dir).get("epoch")
            write_kernel_state(working, "time-limited", f"fold {fold} after epoch {epoch}", SETTINGS,
                                         resume.progress(fold_dir))
            print(f"fold {fold} stopped at the time limit after epoch {epoch}, NOT finished: push this kernel again "
                  f"(same command) and the new version resumes from this output", flush=True)
            return 0
        if rc != 0 and finished:  # only the refiner, trained after the fold, failed: the fold scores guided
            print("warning: the fold is trained but its refiner failed (above)", file=sys.stderr, flush=True)
            rc = 0
        if rc == 0 and SETTINGS.get("score"):
            on_kaggle.copy_outputs(runs / name, working)  # the model is safe before scoring starts
            # --tune-threshold: the run's config gets the fold's best threshold, which predict then uses
            refine = on_kaggle.refine_for_score(runs / name, int(fold))  # guided where the fold has no refiner
            if cli(["score", "--run", str(runs / name), "--fold", fold, "--data", str(data), "--tune-threshold",
                    *refine]) != 0:
                print("warning: scoring failed (see above); the trained fold is in the output all the same",
                      file=sys.stderr, flush=True)
    finally:
        copied = on_kaggle.copy_outputs(runs / name, working)
        print(f"output: {len(copied)} file(s) in {working}: {', '.join(str(p.relative_to(working)) for p in copied)}",
              flush=True)
    if rc == 0:
        write_kernel_state(working, "complete", f"fold {fold}", SETTINGS, resume.progress(fold_dir))
    return rc


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
