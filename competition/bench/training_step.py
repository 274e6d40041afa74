"""Benchmark section 9. Training step: XLA against Keras's default on a CPU, and bfloat16 where the CPU has it."""
from __future__ import annotations

import gc
import os
import tempfile
import time

import numpy as np

from ..config import preset
from ..models import build_model
from ..models.runtime import XLA_CACHE_ENV, XLA_ENV, cpu_has_bf16, dtype_policy
from .common import Budget, figure, interleaved, median, section

DEFAULT, XLA = "Keras default (no XLA on CPU)", "XLA (runtime.jit_compile)"
BF16 = "mixed bfloat16, no XLA (--mixed-precision)"


def _compiled(cfg, jit: bool, policy: str = "float32"):
    """The preset's model compiled as `train` compiles it (Adam, loss, clipnorm, metrics), XLA on or off, built
    in the dtype policy `policy`."""
    import keras

    from ..training.train import compile_model
    keras.utils.set_random_seed(0)  # every variant starts from the same weights
    with dtype_policy(policy):
        return compile_model(build_model(cfg), cfg, cfg.lr, jit=jit)


def _train_choice(cfg, models: tuple) -> bool:
    """What `train` chooses for XLA here, measured afresh in this run (a cache of its own, then removed) by
    train's own probe, on `models` (this section's pair without and with XLA, so they are not built twice)."""
    from ..training.train import choose_xla
    saved = {k: os.environ.pop(k, None) for k in (XLA_ENV, XLA_CACHE_ENV)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[XLA_CACHE_ENV] = os.path.join(tmp, "xla.json")
            return choose_xla(cfg, "float32", models) is True
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def _choice_figure(cfg, models: tuple, s_per_image: dict[str, float], data: dict) -> dict:
    """Train's XLA choice for `cfg` here against the speed without XLA timed in this section (issue 36)."""
    chosen = _train_choice(cfg, models)
    kept = s_per_image[DEFAULT] / s_per_image[XLA if chosen else DEFAULT]
    data.update(train_chooses_xla=chosen, chosen_speed_vs_without=kept)
    return figure(f"XLA as train chooses it on this CPU, preset {cfg.preset} batch {cfg.batch}: "
                  f"{'on' if chosen else 'off'} (a few steps timed, runtime.xla_choice)",
                  f"{s_per_image[XLA if chosen else DEFAULT]:.3f} s/image as chosen",
                  f"{s_per_image[DEFAULT]:.3f} s/image without XLA", kept, "x the speed without XLA",
                  ">= 0.95 (never slower than without XLA, within noise)", kept >= 0.95)


def bench_training_step(plan: Budget) -> tuple[dict, list[dict]]:
    import keras

    bf16 = cpu_has_bf16()
    variants = [(DEFAULT, False, "float32"), (XLA, True, "float32")]
    variants += [(BF16, False, "mixed_bfloat16")] if bf16 else []
    rows, data, figs = [], {}, []
    for name in plan.xla_presets:
        cfg = preset(name)
        batch = plan.xla_batch or cfg.batch
        rng = np.random.default_rng(0)
        x = rng.random((batch, *cfg.train_size, 3), dtype=np.float32)
        y = (rng.random((batch, *cfg.train_size, 1)) > 0.5).astype(np.float32)
        models, first_loss, first_s = {}, {}, {}
        for label, jit, policy in variants:
            models[label] = _compiled(cfg, jit, policy)
            t0 = time.perf_counter()
            logs = models[label].train_on_batch(x, y, return_dict=True)  # traces (and compiles)
            first_loss[label] = float(np.asarray(logs["loss"]))
            first_s[label] = time.perf_counter() - t0
        times = interleaved({k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}, plan.rounds)
        s_per_image = {k: median(v) / batch for k, v in times.items()}
        speedup = s_per_image[DEFAULT] / s_per_image[XLA]
        loss_gap = abs(first_loss[DEFAULT] - first_loss[XLA])
        data[name] = {"size": list(cfg.train_size), "batch": batch, "s_per_image": s_per_image, "raw_step_s": times,
                      "first_step_s": first_s, "first_loss": first_loss, "first_loss_gap": loss_gap,
                      "speedup": speedup}
        bf16_speedup = s_per_image[XLA] / s_per_image[BF16] if bf16 else None
        if bf16:
            data[name]["bf16_speedup_over_xla"] = bf16_speedup
            data[name]["bf16_first_loss_gap"] = abs(first_loss[BF16] - first_loss[DEFAULT])
        rows.append([name, f"{cfg.train_size[0]}x{cfg.train_size[1]}", str(batch),
                     f"{s_per_image[DEFAULT]:.3f}", f"{s_per_image[XLA]:.3f}", f"**{speedup:.2f}x**",
                     f"{s_per_image[BF16]:.3f} (**{bf16_speedup:.2f}x** XLA's)" if bf16
                     else "- (no AVX512-BF16/AMX)",
                     f"{first_s[DEFAULT]:.1f} / {first_s[XLA]:.1f}", f"{loss_gap:.1e}"])
        figs.append(figure(f"Training step, preset {name} batch {batch}: XLA vs Keras's default on this CPU",
                           f"{s_per_image[XLA]:.3f} s/image with XLA", f"{s_per_image[DEFAULT]:.3f} s/image without",
                           speedup, "x faster", "> 1 (else train should leave XLA off on CPU)",
                           None if plan.xla_batch else speedup > 1))
        if bf16:
            figs.append(figure(f"Training step, preset {name} batch {batch}: bfloat16 vs float32 XLA on this CPU",
                               f"{s_per_image[BF16]:.3f} s/image in bfloat16", f"{s_per_image[XLA]:.3f} s/image "
                               f"float32 with XLA", bf16_speedup, "x faster",
                               "> 1 (else --mixed-precision should stay off on this CPU)",
                               None if plan.xla_batch else bf16_speedup > 1))
        figs.append(_choice_figure(preset(name, batch=batch), (models[DEFAULT], models[XLA]), s_per_image, data[name]))
        models.clear()
        keras.backend.clear_session()
        gc.collect()
    sec = section("9. Training step: XLA vs Keras's default on this CPU",
                  f"Keras's `jit_compile=\"auto\"` leaves XLA off on a machine without GPUs; `train` turns it on "
                  f"there where a few timed steps show it faster (`runtime.xla_choice`, kept per CPU and model "
                  f"shape; COMPETITION_XLA=0/1 forces it): its choice, made afresh in this run by train's own "
                  f"probe on the two models below, is compared with the steps below. Per preset: the same seeded "
                  f"weights compiled both ways as `train` compiles them (Adam, the preset's loss, clipnorm and "
                  f"metrics), one untimed first step (tracing, and XLA's compile: its seconds are shown), then "
                  f"{plan.rounds} `train_on_batch` steps of each, alternating; median step / batch. The first "
                  f"step's losses must agree: XLA changes "
                  f"the speed, not the arithmetic beyond float rounding. On a CPU with bfloat16 instructions "
                  f"(AVX512-BF16 or AMX) a third variant is timed: the model built under Keras's "
                  f"mixed_bfloat16 policy without XLA, as `train` runs a --mixed-precision preset (cpu) there.",
                  ["preset", "input", "batch", "s/image, default", "s/image, XLA", "speed-up", "s/image, bfloat16",
                   "first step s (default / XLA)", "|first loss gap|"], rows, data=data)
    return sec, figs
