"""Kaggle kernel: predict the Carvana test set (or one shard of it) with folds trained by train kernels.

`python -m competition kernel build --task predict [--folds 0,1,2,3,4] [--shard i/N]` fills SETTINGS and
PACKAGE_ZIP below and writes the result, with its kernel-metadata.json, to kernels/build/<slug>/. Its
kernel_sources are the train kernels, whose outputs Kaggle mounts at /kaggle/input/notebooks/<user>/<train-slug>/
(or the older flat /kaggle/input/<train-slug>/), and its own slug. On Kaggle this script:
  1. unpacks the embedded `competition` package (no pip, no internet) and puts it on sys.path;
  2. prints the Python/TensorFlow/Keras versions and the GPUs it got, warns when they are fewer or other
     than the accelerator asked for, and stops with one clear line if they cannot run the toolkit;
  3. gathers the train kernels' fold<K>/model.keras into one run folder in /kaggle/temp (checking that
     their configs agree); a blend (`--run A --run B[:WEIGHT]`) gathers one run folder per run;
  4. when this kernel's earlier version left a partial submission in its output (<name>.csv.gz.part and
     its progress record), copies it back, so prediction continues after its last recorded chunk (a file the
     earlier version made with another --tta, --refine or --folds is dropped and predicted again);
  5. with refine "net" (`kernel build --refine net`, or the run's config), trains the refiner net on the gathered
     folds' held-out predictions (`refiner --test-only`: all.keras, minutes on the GPU) and copies it to
     /kaggle/working/refiner/, so a version killed later keeps it (the next one finds it current and skips this);
  6. runs the toolkit's own CLI, `predict --run ... --tta hflip [--shard i/N] --time-limit T --mirror
     /kaggle/working` (a blend: one `--run` per run, with its folds and weight), on the test zip read in
     place from /kaggle/input: every chunk of rows and its progress record are copied into /kaggle/working
     as they are written, and T (Kaggle's 12 hours less a margin) stops it cleanly before Kaggle would;
     push the kernel again to continue - the final file is byte-identical to an uninterrupted run's;
  7. copies the finished submission (<name>.csv.gz, or <name>.shard-i-of-N.csv.gz) and its record of what
     made it (<that name>.json, which `merge` compares shards by) to /kaggle/working,
     the kernel's output; kernel-state.json there says "complete" or "time-limited".
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

SETTINGS = {"task": "predict", "name": "unet", "preset": "unet", "train_kernels": ["<kaggle-user>/carvana-unet-fold-0"], "folds": None, "tta": "hflip", "shard": None, "kernel": None, "accelerator": "t4x2", "refine": None}
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


def main() -> int:
    started = time.monotonic()
    root = Path(os.environ.get("KAGGLE_ROOT") or "/kaggle")
    working, temp = root / "working", root / "temp"
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    package = unpack_toolkit(root)
    from competition.kaggle import on_kaggle
    from competition.kaggle.state import write_kernel_state
    from competition.base.fileio import copy_file
    from competition.__main__ import main as cli
    from competition.config import load_config
    from competition.base.errors import UserError
    from competition.inference.writer import shard_path
    from competition.runs.folder import REFINER_DIR
    from competition.inference.submission import made_path
    print(f"toolkit {SETTINGS.get('toolkit', '?')} from {package}; settings {SETTINGS}", flush=True)
    name, shard = SETTINGS["name"], SETTINGS.get("shard")
    run_dir = temp / "runs" / name
    out = temp / "submissions" / f"{name}.csv.gz"
    written = shard_path(out, tuple(shard) if shard else None)
    try:  # first, before any GPU time: an older or missing output where one is known stops the kernel here
        resume = on_kaggle.check_resume(root / "input", SETTINGS)
        on_kaggle.check_environment(SETTINGS.get("accelerator"), SETTINGS.get("accept_machine", False))
        data = on_kaggle.find_competition_input(root / "input")
        for member in SETTINGS.get("blend") or [{"name": name, "train_kernels": SETTINGS["train_kernels"]}]:
            sources = [on_kaggle.find_kernel_input(root / "input", ref) for ref in member["train_kernels"]]
            on_kaggle.assemble_run(sources, temp / "runs" / member["name"])
        if resume:  # the earlier version's partial (or finished) submission
            on_kaggle.restore_run(root / "input", on_kaggle.resume_source(SETTINGS), [out.parent])
            on_kaggle.discard_made_otherwise(written, SETTINGS["tta"], SETTINGS.get("refine"), SETTINGS.get("folds"))
        refine = SETTINGS.get("refine")
        if refine is None and not SETTINGS.get("blend"):
            refine = load_config(run_dir / "config.json").refine
    except UserError as e:
        return on_kaggle.stop(working, SETTINGS, e)

    if not written.is_file():
        write_kernel_state(working, "running", written.name, SETTINGS)
        if refine == "net":  # the refiner learns from what the run's config says (refiner_from): the gathered
                             # folds' held-out predictions (oof.npz), or the first fold's model on its training photos
            restored = out.parent / REFINER_DIR  # the earlier version's, restored with its output
            if restored.is_dir():  # kept by `refiner` if it learnt from these very folds, else retrained
                shutil.copytree(restored, run_dir / REFINER_DIR, dirs_exist_ok=True)
            rc = cli(["refiner", "--run", str(run_dir), "--data", str(data), "--test-only"])
            if rc != 0:
                return rc
            for file in ("all.keras", "refiner.json"):  # the model first: a record alone is never current
                copy_file(run_dir / REFINER_DIR / file, working / REFINER_DIR / file)
        runs = [f"{temp / 'runs' / m['name']}@{','.join(map(str, m['folds']))}:{m['weight']}"
                for m in SETTINGS.get("blend") or []] or [str(run_dir)]  # NAME@FOLDS:WEIGHT per blended run
        args = ["predict", *(x for r in runs for x in ("--run", r)), "--data", str(data), "--out", str(out),
                "--tta", SETTINGS["tta"], "--mirror", str(working),
                "--time-limit", on_kaggle.time_limit("predict", started, session_hours=SETTINGS.get("session_hours"),
                                                     cap=SETTINGS.get("time_limit"))]
        if SETTINGS.get("refine"):
            args += ["--refine", SETTINGS["refine"]]
        if SETTINGS.get("threshold") is not None:  # a blend's threshold tuned by `score --tune-threshold`
            args += ["--threshold", str(SETTINGS["threshold"])]
        if SETTINGS.get("folds"):
            args += ["--folds", ",".join(str(f) for f in SETTINGS["folds"])]
        if shard:
            args += ["--shard", f"{shard[0]}/{shard[1]}"]
        rc = cli(args)
        if rc != 0:
            return rc
    if not written.is_file():
        write_kernel_state(working, "time-limited", f"{written.name}: partial", SETTINGS)
        print(f"{written.name} stopped at the time limit, NOT finished: push this kernel again (same command) "
              f"and the new version continues from the rows in this output", flush=True)
        return 0
    if made_path(written).is_file():  # what made it, for `merge` to compare shards by
        copy_file(made_path(written), working / made_path(written).name)
    copy_file(written, working / written.name)
    write_kernel_state(working, "complete", written.name, SETTINGS)
    print(f"output: {working / written.name}", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
