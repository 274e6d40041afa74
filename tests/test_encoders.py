"""Pretrained encoders: the table checked layer by layer, every encoder built (weights none), trained a step,
saved and reloaded; weights from local files; the one-line error without a network; freeze, unfreeze and a
resume across them; kernels that turn the internet on only for ImageNet weights. Nothing is downloaded: Keras'
downloader is replaced by one that fails. Models train eagerly (run_eagerly): tracing a graph of a backbone
costs more than the test, and the toolkit's logic is what is under test."""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import keras
import numpy as np
import pytest

from competition.kaggle import build as kbuild
from competition.kaggle import kernels
from competition.kaggle import on_kaggle
from competition.config import preset
from competition.base.errors import UserError
from competition.kaggle.spec import KernelSpec
from competition.models.losses import make_loss
from competition.models import encoders
from competition.models.encoders import ENCODERS, ENCODER_LAYER, FINETUNE_LR_FACTOR, PREPROCESS_LAYER
from competition.models.saving import load_model
from competition.models.saving import save_model

H, W = 32, 64  # small, multiples of 32, not square: a height/width mix-up shows


@pytest.fixture
def offline(monkeypatch, tmp_path) -> list[str]:
    """No network and an empty Keras cache: every download fails; returns the file names asked for."""
    from keras.src.backend import config
    from keras.src.utils import file_utils
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras-home"))
    asked: list[str] = []

    def no_network(url, filename, *args, **kwargs):
        asked.append(Path(filename).name)
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return asked


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((2, H, W, 3), dtype=np.float32)
    return x, (x[..., :1] > 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Each encoder, weights none: (model after one training step, path of its saved model.keras, its reload)."""
    out = {}
    x, y = _batch()
    for name in ENCODERS:
        model = encoders.build_encoder_unet((H, W, 3), name, weights="none", filters=2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=make_loss("dice_bce"), run_eagerly=True)
        head = model.get_layer("head_logits").get_weights()[0].copy()
        model.train_on_batch(x, y)
        assert not np.array_equal(head, model.get_layer("head_logits").get_weights()[0])  # it trained
        path = tmp_path_factory.mktemp(name) / "model.keras"
        save_model(model, path)
        out[name] = (model, path, load_model(path, compile=False))  # the toolkit's loader, as predict uses
    return out


@pytest.mark.parametrize("name", list(ENCODERS))
def test_table_entry_skips_and_bottleneck_have_their_strides(trained, name):
    spec = ENCODERS[name]
    assert list(spec.strides) == sorted(set(spec.strides)) and len(spec.strides) == len(spec.skips)
    model = trained[name][0]
    outputs = model.get_layer(ENCODER_LAYER).outputs
    assert [tuple(o.shape[1:3]) for o in outputs] == [(H // s, W // s) for s in (*spec.strides, 32)]
    assert tuple(model.output.shape[1:]) == (H, W, 1) and model.output.dtype == "float32"


@pytest.mark.parametrize("name", list(ENCODERS))
def test_saved_and_reloaded_model_predicts_the_same(trained, name):
    model, _, loaded = trained[name]
    x, _ = _batch(1)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=0, atol=1e-6)
    kernel, bias = encoders.preprocess_affine(ENCODERS[name].preprocess)
    saved = loaded.get_layer(PREPROCESS_LAYER).get_weights()
    np.testing.assert_array_equal(saved[0][0, 0], kernel)  # frozen: training did not move it
    np.testing.assert_array_equal(saved[1], bias)


@pytest.mark.parametrize("mode, module", [("caffe", "vgg16"), ("caffe", "resnet"), ("tf", "mobilenet_v2"),
                                          ("raw255", "efficientnet")])
def test_preprocessing_is_the_backbones_own(mode, module):
    """The in-model 1x1 convolution equals keras.applications' preprocess_input on 0..255 RGB."""
    x = np.random.default_rng(2).random((2, 5, 7, 3), dtype=np.float32)
    kernel, bias = encoders.preprocess_affine(mode)
    expected = getattr(keras.applications, module).preprocess_input(x * 255.0)
    np.testing.assert_allclose(x @ kernel + bias, expected, rtol=1e-5, atol=1e-3)
    assert {e.preprocess for e in ENCODERS.values()} <= {"caffe", "tf", "raw255"}


def test_table_names_the_files_keras_downloads(offline):
    """Each entry's weights_file is exactly what keras.applications asks for (asked of a downloader that fails)."""
    for name, spec in ENCODERS.items():
        with pytest.raises(UserError) as e:
            encoders.build_backbone(name, (32, 32, 3), "imagenet")
        assert offline[-1] == spec.weights_file
        assert spec.weights_file in str(e.value) and "\n" not in str(e.value)


def _encoder_weights(model) -> list[np.ndarray]:
    return model.get_layer(ENCODER_LAYER).get_weights()


def test_encoder_weights_from_a_saved_model(trained):
    model, path, _ = trained["vgg16"]
    fresh = encoders.build_encoder_unet((H, W, 3), "vgg16", weights=str(path), filters=2)
    for a, b in zip(_encoder_weights(fresh), _encoder_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    # another encoder's model is refused in one line
    with pytest.raises(UserError) as e:
        encoders.build_backbone("mobilenetv2", (H, W, 3), str(path))
    assert "has no layer" in str(e.value) and "\n" not in str(e.value)


def test_encoder_weights_from_h5_files(tmp_path):
    """A backbone's .weights.h5, and a legacy .h5 named like the ImageNet file (what a Kaggle dataset holds)."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
    backbone = encoders.build_backbone("mobilenetv2", (H, W, 3), "none")
    native = tmp_path / "backbone.weights.h5"
    backbone.save_weights(native)
    legacy = tmp_path / ENCODERS["mobilenetv2"].weights_file
    with h5py.File(legacy, "w") as f:
        save_weights_to_hdf5_group(f, backbone)
    for path in (native, legacy):
        loaded = encoders.build_backbone("mobilenetv2", (H, W, 3), str(path))
        for a, b in zip(loaded.get_weights(), backbone.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="no such file"):
        encoders.build_backbone("mobilenetv2", (H, W, 3), str(tmp_path / "missing.h5"))


def test_imagenet_without_network_is_one_line_exit_2(offline, synth_dir, tmp_path, capsys):
    from competition.cli import main
    rc = main(["--quiet", "train", "--preset", "tiny", "--size", "32x64", "--encoder", "vgg16", "--encoder-weights",
               "imagenet", "--data", str(synth_dir), "--runs", str(tmp_path / "runs"), "--cache", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    wanted = ENCODERS["vgg16"].weights_file
    assert offline == [wanted]
    assert f"put {wanted} in {tmp_path / 'keras-home' / 'models'}/" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # asked before train writes anything: nothing to clean up


def test_mixed_precision_keeps_the_preprocessing_and_the_output_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = encoders.build_encoder_unet((32, 64, 3), "vgg16", weights="none", filters=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer(PREPROCESS_LAYER).compute_dtype == "float32" and model.output.dtype == "float32"
    assert model.get_layer(ENCODER_LAYER).get_layer("block1_conv1").compute_dtype == "float16"
    assert model.get_layer("dec1_conv1").compute_dtype == "float16"


def _trainable(model) -> set[str]:
    return {v.path for v in model.trainable_weights}


def test_freeze_then_unfreeze_changes_what_trains(tmp_path):
    from competition.training.train import _unfreeze
    cfg = preset("tiny", height=32, width=64, encoder="vgg16", encoder_weights="none", freeze_encoder=2, filters=2)
    model = encoders.build_encoder_unet((32, 64, 3), "vgg16", weights="none", filters=2, freeze=True)
    encoder_vars = {v.path for v in model.get_layer(ENCODER_LAYER).weights}
    frozen = _trainable(model)
    assert frozen and not frozen & encoder_vars and all("preprocess" not in p for p in frozen)
    save_model(model, tmp_path / "backup.keras")  # what a resume loads: still frozen
    model = load_model(tmp_path / "backup.keras", compile=False)
    assert _trainable(model) == frozen
    state = _unfreeze(model, cfg, {"epoch": 2, "wait": 1, "stopped": True, "reduce_lr": {"lr": 1.0}, "best": 0.5})
    assert _trainable(model) == frozen | encoder_vars
    assert all("preprocess" not in p for p in _trainable(model))
    assert float(model.optimizer.learning_rate) == pytest.approx(cfg.lr * FINETUNE_LR_FACTOR)
    assert state == {"epoch": 2, "wait": 0, "stopped": False, "best": 0.5, "phase": "finetune"}


def _encoder_trainable(path: Path) -> bool:
    """The encoder's trainable flag as saved in a model.keras (read from its config, without loading it)."""
    import zipfile
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    [layer] = [x for x in config["config"]["layers"] if x["config"]["name"] == ENCODER_LAYER]
    return layer["config"]["trainable"]


def test_freeze_encoder_survives_a_resume_at_the_phase_change(synth_dir, tmp_path, monkeypatch):
    """Stopped (time limit) at the end of the frozen epochs, resumed: unfrozen, lower lr, history continued."""
    from competition.training import train as train_module
    from competition.base.timelimit import Deadline
    from competition.training.train import train
    compile_ = train_module.compile_model

    def eager(model, cfg, lr, jit=None):  # new model and phase change; a resumed backup is recompiled by the change
        compile_(model, cfg, lr, jit).run_eagerly = True
        return model
    monkeypatch.setattr(train_module, "compile_model", eager)
    cfg = preset("tiny", height=32, width=32, encoder="vgg16", encoder_weights="none", freeze_encoder=1, epochs=2,
                 filters=2, batch=8, max_images=17, patience=5, augment=())
    run = tmp_path / "run"
    first = train(cfg, str(synth_dir), run, 0, tmp_path / "cache", time_limit=Deadline(1e-6))
    assert first["time_limited"] and first["epochs"] == 1
    state = json.loads((run / "fold0" / "backup" / "state.json").read_text())
    assert state["phase"] == "frozen" and state["epoch"] == 1
    assert _encoder_trainable(run / "fold0" / "backup" / state["backup"]) is False
    summary = train(cfg, str(synth_dir), run, 0, tmp_path / "cache")
    assert summary["epochs"] == 2
    history = (run / "fold0" / "history.csv").read_text().splitlines()
    lrs = [float(row.split(",")[history[0].split(",").index("lr")]) for row in history[1:]]
    assert lrs == pytest.approx([cfg.lr, cfg.lr * FINETUNE_LR_FACTOR])
    assert _encoder_trainable(run / "fold0" / "model.keras") is (summary["best_epoch"] == 2)  # the best epoch's


# --- kernels --------------------------------------------------------------------------------------
def _metadata(tmp_path: Path, **kw) -> dict:
    folder = kernels.build(KernelSpec(task="train", preset="unet", name="enc", user="alice", **kw), tmp_path)
    return json.loads((folder / kbuild.METADATA_FILE).read_text())


def test_kernel_internet_only_for_imagenet_weights(tmp_path, monkeypatch):
    assert _metadata(tmp_path)["enable_internet"] is False
    assert _metadata(tmp_path, encoder="vgg16")["enable_internet"] is True  # imagenet is the default
    assert _metadata(tmp_path, encoder="vgg16", encoder_weights="imagenet")["enable_internet"] is True
    assert _metadata(tmp_path, encoder="vgg16", encoder_weights="none")["enable_internet"] is False
    meta = _metadata(tmp_path, encoder="vgg16", weights_dataset="alice/vgg16-notop")
    assert meta["enable_internet"] is False and meta["dataset_sources"] == ["alice/vgg16-notop"]
    script = (tmp_path / "carvana-enc-fold-0" / "run.py").read_text()
    assert "'encoder': 'vgg16'" in script and "'weights_dataset': 'alice/vgg16-notop'" in script
    _metadata(tmp_path, encoder="vgg16", encoder_weights="none", filters=16, freeze_encoder=2)
    script = (tmp_path / "carvana-enc-fold-0" / "run.py").read_text()
    assert "'filters': 16" in script and "'freeze_encoder': 2" in script and "'encoder_weights': 'none'" in script
    with pytest.raises(UserError, match="--weights-dataset"):
        _metadata(tmp_path, encoder="vgg16", encoder_weights=str(tmp_path / "w.h5"))
    with pytest.raises(UserError, match="need --encoder"):
        _metadata(tmp_path, weights_dataset="alice/x")
    from competition import config  # demo's net at 160x240 (its size before issue 36), refused before a push
    monkeypatch.setitem(config.PRESETS, "demo-160", dict(config.PRESETS["demo"], height=160, width=240))
    with pytest.raises(UserError, match="not a multiple of 32"):
        kernels.build(KernelSpec(task="train", preset="demo-160", name="enc", user="alice", encoder="vgg16"), tmp_path)


def test_kernel_finds_the_weights_file_in_the_dataset(tmp_path):
    wanted = ENCODERS["resnet50"].weights_file
    root = tmp_path / "input"
    folder = root / "datasets" / "alice" / "weights"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("weights")
    (folder / "other.h5").write_bytes(b"x")
    assert on_kaggle.find_weights_file(root, "alice/weights", "resnet50") == folder / "other.h5"  # the only one
    (folder / "sub").mkdir()
    (folder / "sub" / "second.keras").write_bytes(b"x")
    with pytest.raises(UserError) as e:
        on_kaggle.find_weights_file(root, "alice/weights", "resnet50")
    assert f"no {wanted}" in str(e.value) and "\n" not in str(e.value)
    (folder / "sub" / wanted).write_bytes(b"x")
    assert on_kaggle.find_weights_file(root, "alice/weights", "resnet50") == folder / "sub" / wanted
    with pytest.raises(UserError, match="dataset_sources"):
        on_kaggle.find_weights_file(root, "alice/absent", "resnet50")


def test_a_crop_trained_encoder_model_takes_crops_and_whole_frames():
    from competition.config import preset
    from competition.models import build_model
    cfg = preset("tiny", height=64, width=96, encoder="mobilenetv2", encoder_weights="none", crop=(32, 32), filters=4)
    model = build_model(cfg, (None, None))  # as train builds it for --crop
    assert model.predict_on_batch(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32, 32, 1)
    assert model.predict_on_batch(np.zeros((1, 64, 96, 3), np.float32)).shape == (1, 64, 96, 1)
