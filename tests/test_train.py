"""Training a tiny U-Net on the synthetic set: run files, resume, NaN, config checks."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import keras

from competition.runs import folder as runs_mod
from competition.models import runtime
from competition.models import runtime as runtime_mod
from competition.training import train as train_mod
from competition.config import preset
from competition.base.errors import UserError
from competition.models.losses import make_metrics
from competition.runs.folder import load_oof
from competition.training.train import train
from conftest import TINY


def test_tiny_run_writes_every_file_learns_and_stops_early(tiny_run, synth_dir):
    out = tiny_run / "fold0"
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "oof.npz", "train.json"):
        assert (out / name).is_file(), name
    assert (tiny_run / "folds.csv").is_file() and (tiny_run / "config.json").is_file()
    assert not (out / "backup").exists(), "the backup is removed once the fold is complete"
    rows = list(csv.DictReader(open(out / "history.csv")))
    epochs = len(rows)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0], losses
    # patience 1: training stopped at the first epoch that did not improve val_dice, before TINY's last epoch
    dice = [float(r["val_dice"]) for r in rows]
    assert epochs < TINY["epochs"] and dice[-1] <= max(dice[:-1]), dice
    assert all(b > a for a, b in zip(dice[:-2], dice[1:-1])), dice
    summary = json.loads((out / "train.json").read_text())
    assert summary["epochs"] == epochs and summary["best"] == max(dice) and summary["best_epoch"] == epochs - 1
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ids, probs = load_oof(out / "oof.npz")
    folds = dict((r["img"][:-4], int(r["fold"])) for r in csv.DictReader(open(tiny_run / "folds.csv")))
    assert ids == sorted(i for i, f in folds.items() if f == 0)
    assert probs.shape == (len(ids), 32, 48) and 0 <= probs.min() and probs.max() <= 1
    model = keras.models.load_model(out / "model.keras")  # plain Keras, no custom_objects
    assert model.output_shape == (None, 32, 48, 1)


def test_rerun_of_a_complete_fold_is_a_no_op(tiny_run, synth_dir, tiny_cache, capsys):
    before = (tiny_run / "fold0" / "model.keras").stat().st_mtime_ns
    train(preset("tiny", **TINY), str(synth_dir), tiny_run, 0, tiny_cache)
    assert (tiny_run / "fold0" / "model.keras").stat().st_mtime_ns == before
    assert "already trained" in capsys.readouterr().out


def test_nan_loss_stops_and_keeps_last_good_model(tmp_path, synth_dir, monkeypatch):
    real_new = train_mod.new_model

    def poisoned(cfg, jit=None):
        model = real_new(cfg, jit)
        steps = model.optimizer.iterations

        def nan_after_first_epoch(y_true, y_pred):
            base = keras.ops.mean(keras.ops.square(y_true - y_pred), axis=(1, 2, 3))
            return base * keras.ops.where(steps >= 12, math.nan, 1.0)  # NaN from mid epoch 2 on (8 steps an epoch)

        model.compile(optimizer=model.optimizer, loss=nan_after_first_epoch, metrics=make_metrics())
        return model

    monkeypatch.setattr(train_mod, "new_model", poisoned)
    cfg = preset("tiny", epochs=4, patience=10, k=3, monitor="val_loss")
    with pytest.raises(UserError, match="NaN in epoch 2.*epoch 1"):
        train(cfg, str(synth_dir), tmp_path / "r", 0, tmp_path / "cache")
    assert (tmp_path / "r" / "fold0" / "model.keras").is_file()


def test_fold_out_of_range_and_incompatible_run(tmp_path, synth_dir, tiny_run):
    with pytest.raises(UserError, match="out of range"):
        train(preset("tiny", k=3), str(synth_dir), tmp_path / "r", 3, None)
    with pytest.raises(UserError, match="different config .*filters"):
        train(preset("tiny", **{**TINY, "filters": 8}), str(synth_dir), tiny_run, 1, None)


def test_seed_subset_takes_whole_cars():
    ids = [f"car{c:02d}_{v:02d}" for c in range(10) for v in range(1, 17)]
    chosen = runs_mod.select_ids(ids, 40, seed=1)
    assert len(chosen) == 48 and len({i.split("_")[0] for i in chosen}) == 3
    assert runs_mod.select_ids(ids, 0, 1) == ids


def test_streaming_examples_equal_the_cache(synth_dir, tmp_path):
    from competition.data.layout import open_dataset
    from competition.data.pipeline import build_cache, streaming
    from competition.base.geometry import Geometry
    ds = open_dataset(synth_dir)
    ids, geom = ds.train_ids[:6], Geometry(32, 48)
    cached = build_cache(ds, ids, geom, "area", tmp_path / "cache")
    lazy = streaming(ds, ids, geom, "area")
    order = np.array([4, 1, 3])
    for a, b in zip(cached.batch(order), lazy.batch(np.sort(order))):
        np.testing.assert_array_equal(a, b)
    assert lazy.size == cached.size == (32, 48)


def test_training_without_a_cache(synth_dir, tmp_path):
    summary = train(preset("tiny", epochs=1, k=3), str(synth_dir), tmp_path / "r", 2, None)
    assert summary["epochs"] == 1 and not (tmp_path / "cache").exists()


def test_learning_rate_schedule_warmup_then_cosine():
    cfg = preset("tiny", lr=1e-2, epochs=11, warmup=2, schedule="cosine")
    rates = [train_mod.lr_at(cfg, e) for e in range(cfg.epochs)]
    assert rates[0] == pytest.approx(1e-3) and rates[1] == pytest.approx(5.5e-3)  # lr/10, then half-way up
    assert rates[2] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-4)  # the peak, then lr/100 at the end
    assert all(b < a for a, b in zip(rates[2:], rates[3:])), rates  # falls every epoch after the warm-up
    flat = preset("tiny", lr=1e-2, epochs=5)
    assert [train_mod.lr_at(flat, e) for e in range(5)] == [1e-2] * 5
    with pytest.raises(UserError, match="schedule"):
        preset("tiny", schedule="linear")


def test_training_follows_the_schedule_and_clips(synth_dir, tmp_path, tiny_cache):
    cfg = preset("tiny", epochs=3, k=3, patience=3, warmup=1, schedule="cosine", clipnorm=1.0)
    train(cfg, str(synth_dir), tmp_path / "r", 0, tiny_cache)
    rows = list(csv.DictReader(open(tmp_path / "r" / "fold0" / "history.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([train_mod.lr_at(cfg, e) for e in range(3)], rel=1e-5)
    model = keras.models.load_model(tmp_path / "r" / "fold0" / "model.keras")
    assert model.optimizer.clipnorm == 1.0


def test_bfloat16_is_read_from_the_cpu_flags():
    assert runtime_mod.cpu_has_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert runtime_mod.cpu_has_bf16("flags\t: fpu sse2 amx_bf16 amx_tile\n")
    assert not runtime_mod.cpu_has_bf16("flags\t: fpu avx2 avx512f avx512_vnni\n")
    assert not runtime_mod.cpu_has_bf16("model name\t: avx512_bf16\nflags\t: fpu avx2\n")  # only the flags count
    assert not runtime_mod.cpu_has_bf16("")


def test_mixed_precision_is_decided_by_the_device_alone():
    from competition.models.runtime import Device, precision_policy as policy
    t4, p100, v100, a100, l4, h100, k80, gtx1080 = ((7, 5), (6, 0), (7, 0), (8, 0), (8, 9), (9, 0), (3, 7), (6, 1))
    assert policy(False, Device(t4)) == policy(False, Device(h100)) == policy(False, Device(None, True)) == "float32"
    assert policy(True, Device(t4)) == policy(True, Device(p100)) == policy(True, Device(v100)) == "mixed_float16"
    assert policy(True, Device(a100)) == policy(True, Device(l4)) == policy(True, Device(h100)) == "mixed_bfloat16"
    assert policy(True, Device(k80)) == policy(True, Device(gtx1080)) == "float32"  # slow float16, no bfloat16
    assert policy(True, Device(None, bf16_cpu=True)) == "mixed_bfloat16"  # AVX512-BF16 or AMX
    assert policy(True, Device(None, bf16_cpu=False)) == "float32"  # emulated bfloat16 would be slower


@pytest.mark.parametrize("bf16", [True, False])
def test_mixed_precision_training_on_a_cpu(bf16, synth_dir, tmp_path, tiny_cache, monkeypatch, capsys):
    monkeypatch.delenv(runtime_mod.XLA_ENV, raising=False)
    # XLA's probe made deterministic (a host where XLA is faster in float32), with a cache of this test's own: the
    # probe's timing on a busy CI machine is not what this test is about (test_xla_is_measured_once_... is)
    monkeypatch.setenv(runtime_mod.XLA_CACHE_ENV, str(tmp_path / "xla.json"))
    monkeypatch.setattr(train_mod, "_time_xla", lambda cfg, policy, models=None: (1.0, 0.5))
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda cpuinfo=None: bf16)
    cfg = preset("tiny", epochs=3, k=3, patience=3, mixed_precision=True)
    train(cfg, str(synth_dir), tmp_path / "r", 0, tiny_cache)
    said = capsys.readouterr().out
    assert ("bfloat16 on this CPU" in said) == bf16 and ("--mixed-precision ignored" in said) != bf16
    assert keras.mixed_precision.global_policy().name == "float32"  # restored: nothing after it computes in bf16
    model = keras.models.load_model(tmp_path / "r" / "fold0" / "model.keras")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.dtype_policy.name for layer in convs} == {"mixed_bfloat16" if bf16 else "float32"}
    assert model.get_layer("mask").dtype_policy.name == "float32"  # the sigmoid (and the loss) stay float32
    assert model.jit_compile is (not bf16)  # XLA's CPU backend would compute bfloat16 slowly
    rows = list(csv.DictReader(open(tmp_path / "r" / "fold0" / "history.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    _, probs = load_oof(tmp_path / "r" / "fold0" / "oof.npz")
    assert probs.max() > 0.5 > probs.min()


def test_training_compiles_with_xla_on_a_machine_without_gpus_unless_turned_off(monkeypatch):
    """Keras's "auto" leaves XLA off on a CPU; train turns it on there (about 2x a step, bench section 9)."""
    monkeypatch.delenv(runtime_mod.XLA_ENV, raising=False)
    assert runtime_mod.jit_compile() is True  # the tests see no GPU (CUDA_VISIBLE_DEVICES="")
    assert train_mod.new_model(preset("tiny")).jit_compile is True
    monkeypatch.setenv(runtime_mod.XLA_ENV, "0")
    assert runtime_mod.jit_compile() is False and train_mod.new_model(preset("tiny")).jit_compile is False
    monkeypatch.setenv(runtime_mod.XLA_ENV, "yes")
    with pytest.raises(UserError, match="COMPETITION_XLA='yes'"):
        runtime_mod.jit_compile()
    opened = []
    monkeypatch.setattr(train_mod, "open_dataset", lambda data: opened.append(data))
    with pytest.raises(UserError, match="COMPETITION_XLA='yes'"):  # before the data is touched
        train_mod.train(preset("tiny"), "somewhere", Path("unused"), 0, None)
    assert opened == []


def test_xla_is_measured_once_per_configuration_and_host_and_kept(tmp_path, monkeypatch, capsys):
    """Issue 36: XLA where a few timed steps show it faster (never slower), the answer cached per CPU, TF,
    policy and model configuration; COMPETITION_XLA=0/1 still forces it without measuring."""

    monkeypatch.delenv(runtime.XLA_ENV, raising=False)
    monkeypatch.setenv(runtime.XLA_CACHE_ENV, str(tmp_path / "xla.json"))
    probes = []

    def probe(without, with_xla):
        return lambda: probes.append(1) or (without, with_xla)
    assert runtime.jit_compile("float32", probe(1.0, 0.5), "a") is True
    assert runtime.jit_compile("float32", probe(9.0, 9.0), "a") is True  # kept: not measured again
    assert runtime.jit_compile("float32", probe(1.0, 0.97), "b") is False  # within 5%: off, never slower
    assert runtime.jit_compile("float32", probe(0.5, 1.0), "c") is False
    assert len(probes) == 3 and "XLA off" in capsys.readouterr().out
    cache = json.loads((tmp_path / "xla.json").read_text())
    assert sorted(k.rsplit(" | ", 1)[-1] for k in cache) == ["a", "b", "c"]
    assert all(runtime.cpu_model() in k for k in cache)
    assert runtime.jit_compile("mixed_bfloat16", probe(1.0, 0.1), "d") is False and len(probes) == 3
    monkeypatch.setenv(runtime.XLA_ENV, "1")
    assert runtime.jit_compile("float32", probe(0.5, 1.0), "e") is True and len(probes) == 3
    monkeypatch.delenv(runtime.XLA_ENV)
    # train measures the real thing on its first run of a configuration (one probe: XLA's compile is its cost)
    (tmp_path / "xla.json").unlink()
    chosen = train_mod.choose_xla(preset("tiny"), "float32")
    (key, kept), = json.loads((tmp_path / "xla.json").read_text()).items()
    assert kept["step_s_without"] > 0 and kept["step_s_with"] > 0 and chosen is kept["xla"]
    assert "tiny" not in key and "32x48" in key  # keyed by the model's shape, not the preset's name
    monkeypatch.setattr(train_mod, "_time_xla", lambda *a: pytest.fail("measured again"))
    assert train_mod.choose_xla(preset("tiny"), "float32") is chosen


def test_a_compiled_model_traces_its_train_step_once():
    """The optimizer's variables exist before the first step (runtime.build_optimizer), so TensorFlow traces the
    train step once per fit; Keras alone makes them inside the first trace, and the step is traced again."""
    import tensorflow as tf
    cfg = preset("tiny")
    rng = np.random.default_rng(0)
    x = rng.random((8, *cfg.train_size, 3), dtype=np.float32)
    y = (rng.random((8, *cfg.train_size, 1)) > 0.5).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    def traces(model) -> int:
        count, step = [0], model.train_step

        def counted(batch):
            count[0] += 1  # Python runs here only while TensorFlow traces
            return step(batch)
        model.train_step = counted
        model.fit(data, epochs=2, verbose=0, shuffle=False)  # a tf.data set: Keras would warn that it ignores shuffle
        return count[0]
    model = train_mod.new_model(cfg, jit=False)
    assert model.optimizer.built and traces(model) == 1
    bare = keras.models.clone_model(model)  # what Keras does without it: the step traced twice
    bare.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    assert not bare.optimizer.built and traces(bare) == 2


def test_crop_training_goes_through_the_real_xla_probe(synth_dir, tmp_path, monkeypatch):
    """The default code path, as a user meets it (issue 45): COMPETITION_XLA unset, so the first train of this
    configuration on this CPU times its training step without and with XLA. On crops that step must be timed on the
    net that trains on crops (it takes any multiple), not one built for the whole frame ("expected shape=(None, 128,
    192, 3), found shape=(4, 64, 64, 3)" before)."""
    from competition.cli import main
    monkeypatch.delenv(runtime_mod.XLA_ENV, raising=False)
    monkeypatch.setenv(runtime_mod.XLA_CACHE_ENV, str(tmp_path / "xla.json"))
    assert main(["--quiet", "train", "--preset", "tiny", "--size", "128x192", "--crop", "64x64", "--epochs", "1",
                 "--k", "3", "--run", str(tmp_path / "runs" / "crops"), "--data", str(synth_dir),
                 "--cache", str(tmp_path / "cache")]) == 0
    measured = json.loads((tmp_path / "xla.json").read_text())
    assert len(measured) == 1 and isinstance(next(iter(measured.values()))["xla"], bool)  # the probe ran


def test_a_nan_epoch_never_overwrites_the_kept_model(synth_dir, tiny_cache, tmp_path, monkeypatch, capfd):
    """Weights gone NaN in epoch 2: train stops in one line, model.keras and the backup stay epoch 1's, every
    weight finite (issue 45). Keras is first imported by the command itself, as in a user's process."""
    from competition.cli import main
    from competition.training import callbacks as fold_callbacks
    make = fold_callbacks.make_callbacks

    def poisoned(*args, **kwargs):
        import keras

        class Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])
        callbacks, fold = make(*args, **kwargs)
        return [Poison(), *callbacks], fold

    monkeypatch.setattr(fold_callbacks, "make_callbacks", poisoned)
    run = tmp_path / "runs" / "nan"
    code = main(["--quiet", "train", "--preset", "tiny", "--epochs", "3", "--k", "3", "--run", str(run),
                 "--data", str(synth_dir), "--cache", str(tiny_cache)])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "the loss became NaN in epoch 2" in err, err
    import keras
    kept = keras.models.load_model(run / "fold0" / "model.keras", compile=False).get_weights()
    assert all(np.isfinite(w).all() for w in kept)
    state = json.loads((run / "fold0" / "backup" / "state.json").read_text())
    assert state["epoch"] == 1 and state["best_epoch"] == 1 and not (run / "fold0" / "train.json").exists()
