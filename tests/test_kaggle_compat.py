"""Kaggle's versions: the built kernel scripts and model files under the TensorFlow/Keras of Kaggle's image.

`make kaggle-compat` builds .venv-kaggle/ from kernels/kaggle-image.txt and runs this module with
KAGGLE_PYTHON pointing at its interpreter: pytest and the local side run on our pinned versions
(requirements.txt), every kernel script and every "Kaggle side" step runs on Kaggle's. Without KAGGLE_PYTHON
(`make test`) only the loader's own tests run: the second environment is a ~2.5 GB download.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from competition.kaggle import kernels
from competition.kaggle.spec import KernelSpec
from competition.base.rle import decode
from competition.base.submission_csv import validate
from test_kernels import _kaggle_root  # the same stand-in /kaggle as the CPU kernel tests

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "kernels" / "kaggle-image.txt"
KAGGLE_PYTHON = os.environ.get("KAGGLE_PYTHON")
LOCAL_PYTHON = sys.executable

needs_kaggle = pytest.mark.skipif(not KAGGLE_PYTHON, reason="needs Kaggle's versions: run `make kaggle-compat`")


def _pins() -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in PINS.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", **extra)
    return env


def _versions(python: str) -> dict[str, str]:
    code = "import json, numpy, tensorflow, keras; print(json.dumps({'tensorflow': tensorflow.__version__, " \
           "'keras': keras.__version__, 'numpy': numpy.__version__}))"
    proc = subprocess.run([python, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_kaggle
def test_the_kaggle_environment_has_the_images_versions():
    pins, kaggle = _pins(), _versions(KAGGLE_PYTHON)
    assert kaggle == {k: pins[k] for k in kaggle}
    assert kaggle != _versions(LOCAL_PYTHON)  # otherwise nothing here compares two versions


# --- model files across versions ------------------------------------------------------------------
# Run by either interpreter with the repository on sys.path. `save`: a tiny U-Net of the toolkit compiled
# as training compiles it, one optimizer step (Adam slots, BatchNorm statistics), saved as model.keras.
# `load`: loaded by the toolkit's loader as predict loads it (compile=False) and as a resumed fold loads its
# backup (compiled, with the optimizer). Both write their predictions on a fixed input.
MODEL_SCRIPT = r"""
import json, sys
import numpy as np
import keras
from competition import losses
from competition.config import preset
from competition.models import build_model
from competition.models.saving import load_model

mode, path, out, encoder = sys.argv[1:5]
cfg = preset("tiny", **(dict(height=32, width=64, encoder=encoder, encoder_weights="none") if encoder else {}))
rng = np.random.default_rng(0)
x = rng.random((4, cfg.height, cfg.width, 3), dtype=np.float32)
if mode == "save":
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, epsilon=cfg.epsilon),
                  loss=losses.make_loss(cfg.loss, cfg.bce_weight), metrics=losses.make_metrics(cfg.threshold))
    y = (rng.random((4, cfg.height, cfg.width, 1)) > 0.5).astype(np.float32)
    model.train_on_batch(x, y)
    model.save(path)
    np.save(out, model.predict(x, verbose=0))
else:
    inference = load_model(path, compile=False)
    resumed = load_model(path)
    p = inference.predict(x, verbose=0)
    np.testing.assert_array_equal(p, resumed.predict(x, verbose=0))
    np.save(out, p)
    print(json.dumps({"iterations": int(resumed.optimizer.iterations.numpy())}))
"""


def _model_step(python: str, mode: str, path: Path, out: Path, encoder: str = "") -> str:
    proc = subprocess.run([python, "-c", MODEL_SCRIPT, mode, str(path), str(out), encoder], cwd=ROOT,
                          env=_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_kaggle
@pytest.mark.parametrize("encoder", ["", "mobilenetv2"])  # "": the plain U-Net; an encoder nests a backbone model
@pytest.mark.parametrize("saver, loader", [("local", "kaggle"), ("kaggle", "local")])
def test_a_model_saved_by_one_version_predicts_the_same_in_the_other(tmp_path, saver, loader, encoder):
    pythons = {"local": LOCAL_PYTHON, "kaggle": KAGGLE_PYTHON}
    model = tmp_path / "model.keras"
    _model_step(pythons[saver], "save", model, tmp_path / "saved.npy", encoder)
    out = _model_step(pythons[loader], "load", model, tmp_path / "loaded.npy", encoder)
    saved, loaded = np.load(tmp_path / "saved.npy"), np.load(tmp_path / "loaded.npy")
    assert saved.shape == loaded.shape and saved.std() > 1e-4  # a real map, not a constant
    np.testing.assert_allclose(loaded, saved, rtol=0, atol=1e-5)
    state = json.loads(out.strip().splitlines()[-1])
    assert state["iterations"] == 1  # the optimizer state came along: a fold can resume on the other side


# --- the kernel scripts, end to end on Kaggle's versions ------------------------------------------
def _run_kernel(script: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([KAGGLE_PYTHON, str(script)], cwd=root, env=_env(KAGGLE_ROOT=str(root)),
                          capture_output=True, text=True, timeout=600)


def _masks(csv_gz: Path) -> dict[str, np.ndarray]:
    rows = gzip.decompress(csv_gz.read_bytes()).decode().splitlines()[1:]
    return {img: decode(rle) for img, rle in (row.split(",") for row in rows)}


def _local(*args: str) -> None:
    """The toolkit's CLI on our pinned versions (the user's machine)."""
    proc = subprocess.run([LOCAL_PYTHON, "-m", "competition", "--quiet", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_kaggle
def test_kernel_scripts_train_and_predict_on_kaggles_versions(tmp_path, synth_zip_dir):
    pins = _pins()
    from competition.data.layout import open_dataset
    names = [f"{i}.jpg" for i in open_dataset(synth_zip_dir).test_ids]

    # the train kernel on Kaggle's versions; its output, downloaded, predicts on ours
    train_dir = kernels.build(KernelSpec(task="train", fold=0, preset="tiny", name="kc", user="alice",
                                         accelerator="none", epochs=1),
                              tmp_path / "build")
    train_root = _kaggle_root(tmp_path / "train-kaggle", synth_zip_dir)
    proc = _run_kernel(train_dir / "run.py", train_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"tensorflow {pins['tensorflow']}, keras {pins['keras']}" in proc.stdout
    trained_on_kaggle = train_root / "working"
    for name in ("config.json", "folds.csv", "fold0/model.keras", "fold0/history.csv", "fold0/train.json"):
        assert (trained_on_kaggle / name).is_file(), name
    _local("predict", "--run", str(trained_on_kaggle), "--folds", "0", "--tta", "hflip", "--data",
           str(synth_zip_dir), "--out", str(tmp_path / "from-kaggle.csv.gz"))
    assert validate(tmp_path / "from-kaggle.csv.gz", names) == (len(names), [])

    # a fold trained on our versions, predicted by the predict kernel on Kaggle's and locally: the same masks
    _local("train", "--preset", "tiny", "--name", "kc", "--fold", "0", "--epochs", "1", "--data", str(synth_zip_dir),
           "--runs", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"))
    trained_here = tmp_path / "runs" / "kc"
    predict_dir = kernels.build(KernelSpec(task="predict", folds=[0], preset="tiny", name="kc", user="alice",
                                           accelerator="none"),
                                tmp_path / "build")
    predict_root = _kaggle_root(tmp_path / "predict-kaggle", synth_zip_dir)
    (predict_root / "input" / "carvana-kc-fold-0").symlink_to(trained_here, target_is_directory=True)
    proc = _run_kernel(predict_dir / "run.py", predict_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    on_kaggle = predict_root / "working" / "kc.csv.gz"
    assert validate(on_kaggle, names) == (len(names), [])
    _local("predict", "--run", str(trained_here), "--folds", "0", "--tta", "hflip", "--data", str(synth_zip_dir),
           "--out", str(tmp_path / "here.csv.gz"))
    kaggle_masks, local_masks = _masks(on_kaggle), _masks(tmp_path / "here.csv.gz")
    assert kaggle_masks.keys() == local_masks.keys() == set(names)
    for img, mask in kaggle_masks.items():
        differ = np.count_nonzero(mask != local_masks[img])
        assert differ <= 1e-4 * mask.size, f"{img}: {differ} pixels differ"  # float noise at the threshold only
    print(f"masks differing pixels, Kaggle's versions vs ours: "
          f"{sum(np.count_nonzero(m != local_masks[i]) for i, m in kaggle_masks.items())}")


# --- the loader's own tests, on our pinned Keras: a "newer Keras" is simulated by adding arguments --------
@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A tiny U-Net of the toolkit saved by our Keras, a fixed input and its prediction."""
    import keras

    from competition.config import preset
    from competition.models import build_model
    cfg = preset("tiny")
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    x = np.random.default_rng(0).random((2, cfg.height, cfg.width, 3), dtype=np.float32)
    return path, x, model.predict(x, verbose=0)


def _with_config(path: Path, out: Path, edit) -> Path:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return out


def _layers(config: dict, class_name: str) -> list[dict]:
    return [layer for layer in config["config"]["layers"] if layer["class_name"] == class_name]


def test_arguments_a_newer_keras_added_are_dropped_when_off_and_the_model_predicts_the_same(tmp_path,
                                                                                             tiny_model_file):
    from competition.models.saving import load_model
    path, x, expected = tiny_model_file

    def newer(config: dict) -> None:
        for layer in _layers(config, "Conv2D"):
            layer["config"]["kernel_initializer"]["config"]["future_axes"] = None
        for layer in _layers(config, "BatchNormalization"):
            layer["config"]["future_switch"] = False

    edited = _with_config(path, tmp_path / "newer.keras", newer)
    import keras
    with pytest.raises(Exception, match="future_axes"):  # what plain Keras does with it
        keras.models.load_model(edited, compile=False)
    model = load_model(edited, compile=False)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=1e-6)
    # the file itself is left as it was
    assert "future_axes" in zipfile.ZipFile(edited).read("config.json").decode()


def test_an_added_argument_the_model_uses_is_a_one_line_error(tmp_path, tiny_model_file):
    from competition.base.errors import UserError
    from competition.models.saving import load_model
    path, _, _ = tiny_model_file
    edited = _with_config(path, tmp_path / "newer.keras",
                          lambda c: _layers(c, "BatchNormalization")[0]["config"].update(future_switch=True))
    with pytest.raises(UserError) as e:
        load_model(edited)
    assert "\n" not in str(e.value) and "BatchNormalization(future_switch=True)" in str(e.value)
    assert str(edited) in str(e.value)
