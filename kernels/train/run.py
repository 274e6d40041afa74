"""Kaggle kernel: train one fold of the Carvana toolkit on Kaggle's GPUs.

`python -m competition kernel build --task train --fold K` fills SETTINGS and PACKAGE_ZIP below and
writes the result, with its kernel-metadata.json, to kernels/build/<slug>/. On Kaggle this script:
  1. unpacks the embedded `competition` package (no pip, no internet) and puts it on sys.path;
  2. prints the Python/TensorFlow/Keras versions and the GPUs, and stops with one clear line if they
     cannot run the toolkit;
  3. runs the toolkit's own CLI, `train --preset P --name N --fold K`, on the competition's zips read in
     place from /kaggle/input/carvana-image-masking-challenge; the run and its image cache live in
     /kaggle/temp;
  4. copies the finished run folder (config.json, folds.csv, fold<K>/ with model.keras, history.csv,
     curves.png, oof.npz, train.json, and the fold's score when the toolkit has one) to /kaggle/working,
     the kernel's output - also after a failure, so whatever was finished is kept.
It writes nothing outside /kaggle/working and /kaggle/temp. KAGGLE_ROOT (default /kaggle) moves all of
it, e.g. to run this file locally on a copy of the inputs.
"""
import base64
import io
import os
import shutil
import sys
import zipfile
from pathlib import Path

SETTINGS = {"task": "train", "name": "unet", "preset": "unet", "fold": 0, "epochs": None, "score": True}
PACKAGE_ZIP = ""  # `kernel build` fills this line: the competition package, zipped, in base64


def unpack_toolkit(root: Path) -> Path:
    """Put the embedded toolkit on sys.path (the bare template: a copy attached under input/)."""
    if PACKAGE_ZIP.strip():
        dest = root / "temp" / "toolkit"
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(base64.b64decode("".join(PACKAGE_ZIP.split())))) as zf:
            zf.extractall(dest)
    else:
        found = sorted((root / "input").glob("*/competition/__init__.py"))
        if not found:
            sys.exit("error: this is the unfilled template: build the kernel with "
                     "`python -m competition kernel build` (or attach the toolkit's competition/ as a dataset)")
        dest = found[0].parent.parent
    sys.path.insert(0, str(dest))
    return dest / "competition"


def main() -> int:
    root = Path(os.environ.get("KAGGLE_ROOT", "/kaggle"))
    working, temp = root / "working", root / "temp"
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    package = unpack_toolkit(root)
    from competition import kernels
    from competition.__main__ import main as cli
    from competition.errors import UserError
    print(f"toolkit {SETTINGS.get('toolkit', '?')} from {package}; settings {SETTINGS}", flush=True)
    try:
        kernels.check_environment()
        data = kernels.find_competition_input(root / "input")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2

    name, fold = SETTINGS["name"], str(SETTINGS["fold"])
    runs = temp / "runs"
    args = ["train", "--preset", SETTINGS["preset"], "--name", name, "--fold", fold, "--data", str(data),
            "--runs", str(runs), "--cache", str(temp / "cache"),
            "--mixed-precision"]  # float16 on the T4's tensor cores; ignored (with a note) on a CPU session
    if SETTINGS.get("epochs"):
        args += ["--epochs", str(SETTINGS["epochs"])]
    try:
        rc = cli(args)
        if rc == 0 and SETTINGS.get("score") and kernels.toolkit_has("score"):
            kernels.copy_outputs(runs / name, working)  # the model is safe before scoring starts
            if cli(["score", "--run", str(runs / name), "--fold", fold, "--data", str(data)]) != 0:
                print("warning: scoring failed (see above); the trained fold is in the output all the same",
                      file=sys.stderr, flush=True)
    finally:
        copied = kernels.copy_outputs(runs / name, working)
        print(f"output: {len(copied)} file(s) in {working}: {', '.join(str(p.relative_to(working)) for p in copied)}",
              flush=True)
    return rc


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
