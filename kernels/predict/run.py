"""Kaggle kernel: predict the Carvana test set (or one shard of it) with folds trained by train kernels.

`python -m competition kernel build --task predict [--folds 0,1,2,3,4] [--shard i/N]` fills SETTINGS and
PACKAGE_ZIP below and writes the result, with its kernel-metadata.json, to kernels/build/<slug>/. Its
kernel_sources are the train kernels, whose outputs Kaggle mounts at /kaggle/input/<train-slug>/. On
Kaggle this script:
  1. unpacks the embedded `competition` package (no pip, no internet) and puts it on sys.path;
  2. prints the Python/TensorFlow/Keras versions and the GPUs, and stops with one clear line if they
     cannot run the toolkit;
  3. gathers the train kernels' fold<K>/model.keras into one run folder in /kaggle/temp (checking that
     their configs agree);
  4. runs the toolkit's own CLI, `predict --run ... --tta hflip [--shard i/N]`, on the test zip read in
     place from /kaggle/input/carvana-image-masking-challenge;
  5. copies the finished submission (<name>.csv.gz, or <name>.shard-i-of-N.csv.gz) to /kaggle/working,
     the kernel's output.
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

SETTINGS = {"task": "predict", "name": "unet", "preset": "unet", "train_kernels": ["<kaggle-user>/carvana-unet-fold-0"], "folds": None, "tta": "hflip", "shard": None}
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
    from competition.predict import shard_path
    print(f"toolkit {SETTINGS.get('toolkit', '?')} from {package}; settings {SETTINGS}", flush=True)
    name, shard = SETTINGS["name"], SETTINGS.get("shard")
    run_dir = temp / "runs" / name
    try:
        kernels.check_environment()
        data = kernels.find_competition_input(root / "input")
        sources = [kernels.find_kernel_input(root / "input", ref) for ref in SETTINGS["train_kernels"]]
        kernels.assemble_run(sources, run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2

    out = temp / "submissions" / f"{name}.csv.gz"
    args = ["predict", "--run", str(run_dir), "--data", str(data), "--out", str(out), "--tta", SETTINGS["tta"]]
    if SETTINGS.get("folds"):
        args += ["--folds", ",".join(str(f) for f in SETTINGS["folds"])]
    if shard:
        args += ["--shard", f"{shard[0]}/{shard[1]}"]
    rc = cli(args)
    if rc == 0:
        written = shard_path(out, tuple(shard) if shard else None)
        kernels.copy_file(written, working / written.name)
        print(f"output: {working / written.name}", flush=True)
    return rc


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
