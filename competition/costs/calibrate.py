"""Measure each preset's training and prediction speed on this machine's accelerator: the figures `plan` uses.

Backend-neutral (Keras 3 on TensorFlow, JAX or PyTorch): it needs only the models, not the input pipeline, so it
runs where TensorFlow is absent. Every preset is timed at the shape it trains on (its crop, if it has one, else
its input size) with its batch, and at the whole frame it predicts on. Random inputs: speed, not accuracy.

    KERAS_BACKEND=jax python -m competition calibrate --out calibration.json [--mixed-precision] [--presets a,b]
"""
from __future__ import annotations

import gc
import json
import platform
import statistics
import sys
import time

import numpy as np

from ..config import parse_size, preset
from ..models import build_model
from ..models.runtime import build_optimizer, jit_compile


def _sync(x) -> None:
    """Wait for the accelerator: fetch one value of the result (asynchronous backends return early)."""
    np.asarray(x if not isinstance(x, dict) else next(iter(x.values()))).ravel()[:1].tolist()


def time_steps(step, steps: int, warmup: int = 2, cpu: list[float] | None = None) -> list[float]:
    """Seconds of each of `steps` calls of step() after `warmup` untimed ones (compilation, autotuning).

    cpu, if given, gets each step's processor seconds (all threads of this process): on a CPU shared with other
    jobs, processor seconds per image divided by the cores is what the step would take on the idle machine."""
    for _ in range(warmup):
        _sync(step())
    times = []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        _sync(step())
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return times


def device_name() -> str:
    """The accelerator the backend computes on, in words (or the CPU)."""
    import keras
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax
            d = jax.devices()[0]
            return f"{d.platform}:{getattr(d, 'device_kind', d)}"
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return "gpu:" + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        if backend == "torch":
            import torch
            if torch.cuda.is_available():
                return "gpu:" + torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001 - a name is a nicety; the timings stand without it
        return f"unknown ({e})"
    return "cpu:" + (platform.processor() or platform.machine())


def train_shape(cfg) -> tuple[int, int]:
    """The image shape one training step sees: the crop when the preset has one, else its input size."""
    crop = getattr(cfg, "crop", None)
    if crop:
        return tuple(crop) if not isinstance(crop, str) else tuple(int(v) for v in crop.split("x"))
    return cfg.height, cfg.width


def parse_case(text: str) -> tuple[str, tuple[int, int] | None, int | None]:
    """'unet-1280:512x512:8' -> the preset, training on 512x512 crops with batch 8 ('unet' alone: as it is)."""
    name, *rest = text.split(":")
    size = parse_size(rest[0]) if rest and rest[0] else None
    batch = int(rest[1]) if len(rest) > 1 else None
    return name, size, batch


def _train_rate(cfg, h: int, w: int, rng: np.random.Generator, steps: int) -> dict:
    """Training images/s at h x w, compiled as `train` compiles (XLA on a TensorFlow machine without GPUs)."""
    import keras

    from ..models.losses import make_loss
    model = build_model(cfg.replace(height=h, width=w) if (h, w) != (cfg.height, cfg.width) else cfg)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, epsilon=cfg.epsilon),
                  loss=make_loss(cfg.loss, cfg.bce_weight), jit_compile=jit_compile())
    build_optimizer(model)
    x = rng.random((cfg.batch, h, w, 3), dtype=np.float32)
    y = (rng.random((cfg.batch, h, w, 1)) > 0.5).astype(np.float32)
    cpu: list[float] = []
    times = time_steps(lambda: model.train_on_batch(x, y, return_dict=True), steps, cpu=cpu)
    return dict(train_shape=[h, w], train_step_s=times, train_img_s=cfg.batch / statistics.median(times),
                train_cpu_s_per_img=statistics.median(cpu) / cfg.batch)


def _predict_rate(cfg, rng: np.random.Generator, steps: int, predict_batch: int) -> dict:
    """Prediction images/s on whole input frames."""
    model = build_model(cfg)
    x = rng.random((predict_batch, cfg.height, cfg.width, 3), dtype=np.float32)
    times = time_steps(lambda: model.predict_on_batch(x), steps)
    return dict(predict_shape=[cfg.height, cfg.width], predict_step_s=times,
                predict_img_s=predict_batch / statistics.median(times))


def measure(cfg, steps: int, predict_batch: int) -> dict:
    """Training images/s at the training shape and batch, prediction images/s at the whole input frame."""
    import keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    out = {"preset": cfg.preset, "batch": cfg.batch, "predict_batch": predict_batch}
    out.update(_train_rate(cfg, *train_shape(cfg), rng, steps))
    keras.backend.clear_session()  # the training model is gone with _train_rate's frame
    gc.collect()
    out.update(_predict_rate(cfg, rng, steps, predict_batch))
    keras.backend.clear_session()
    gc.collect()
    return out


def calibrate(cases: list[str], mixed_precision: bool, steps: int, predict_batch: int) -> dict:
    """Every case (a preset, or `PRESET:HxW:BATCH` to train it on HxW crops with that batch) measured on this
    machine; a failure (out of memory, say) is recorded, not fatal."""
    import keras

    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    result = {"device": device_name(), "backend": keras.backend.backend(), "keras": keras.__version__,
              "precision": "mixed_float16" if mixed_precision else "float32", "steps": steps,
              "measured": time.strftime("%Y-%m-%d"), "presets": {}}
    for name in cases:
        preset_name, crop, batch = parse_case(name)
        cfg = preset(preset_name, mixed_precision=mixed_precision or None, batch=batch)
        try:
            if crop:
                cfg = _with_crop(cfg, crop)
            result["presets"][name] = measure(cfg, steps, predict_batch)
        except Exception as e:  # noqa: BLE001 - one preset that does not fit must not lose the others
            result["presets"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(name, json.dumps({k: v for k, v in result["presets"][name].items() if not k.endswith("step_s")}),
              flush=True)
    return result


def _with_crop(cfg, crop: tuple[int, int]):
    """The config, training on `crop`."""
    return _Cropped(cfg, crop)


class _Cropped:
    """A config whose training shape is `crop` (whatever crop the preset itself has)."""

    def __init__(self, cfg, crop: tuple[int, int]):
        self._cfg, self.crop = cfg, crop

    def __getattr__(self, name):
        return getattr(self._cfg, name)

    def replace(self, **changes):
        return self._cfg.replace(**changes)


if __name__ == "__main__":  # its former command line, kept as a pointer (the cli imports this module, not back)
    sys.exit("calibrate is a subcommand now: python -m competition calibrate --out FILE [--mixed-precision] ...")
