"""Benchmark section 7. Model throughput."""
from __future__ import annotations

import gc

import numpy as np

from ..config import PRESETS, preset
from ..costs.facts import MIN_ESTIMATE_FLOPS, T4_EFFICIENCY, T4_PEAK_TFLOPS, TEST_IMAGES, TRAIN_IMAGES
from ..models import build_model
from ..models.cost import forward_flops
from ..models.runtime import build_optimizer
from .common import QUICK, Budget, figure, interleaved, median, section


def t4_estimate(flops: float, train_flops: float | None = None) -> dict:
    """Images/s on one T4 from published peak x assumed efficiency / FLOPs (training = 3x the forward FLOPs of
    a training input: `train_flops` for a crop, else the frame's), and minutes."""
    est = {}
    for precision, peak in T4_PEAK_TFLOPS.items():
        rate = 1e12 * peak * T4_EFFICIENCY[precision]
        est[f"infer_{precision}"] = rate / flops
        est[f"train_{precision}"] = rate / (3 * (train_flops or flops))
    est["epoch_minutes"] = TRAIN_IMAGES * 4 / 5 / est["train_fp16"] / 60   # one epoch of one fold
    est["predict_minutes"] = TEST_IMAGES * 2 / est["infer_fp16"] / 60      # hflip TTA: two passes, one fold
    return est


def bench_models(plan: Budget) -> tuple[dict, list[dict]]:
    import keras
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # a new model per preset: TensorFlow's retracing warnings are expected

    from ..models.losses import make_loss
    rows, data = [], {}
    for name in PRESETS:
        cfg = preset(name)
        size = f"{cfg.height}x{cfg.width}" + (f" (trains on {cfg.crop[0]}x{cfg.crop[1]} crops)" if cfg.crop else "")
        if name not in plan.presets:
            rows.append([name, size, "-", "skipped (--quick)" if plan is QUICK else "not measured", "", "", "", "",
                         "", ""])
            continue
        train_hw = cfg.train_size  # a crop preset trains on crops and predicts whole frames
        batch = 1 if train_hw[0] * train_hw[1] >= 640 * 960 else min(cfg.batch, 4)
        keras.utils.set_random_seed(0)
        model = build_model(cfg, (None, None) if cfg.crop else None)  # as train builds it: crops and frames
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, epsilon=cfg.epsilon),
                      loss=make_loss(cfg.loss, cfg.bce_weight))
        build_optimizer(model)
        rng = np.random.default_rng(0)
        x = rng.random((batch, *train_hw, 3), dtype=np.float32)
        y = (rng.random((batch, *train_hw, 1)) > 0.5).astype(np.float32)
        frame = x if not cfg.crop else rng.random((1, cfg.height, cfg.width, 3), dtype=np.float32)
        model.train_on_batch(x, y)  # warm-up: traces the train step
        model.predict_on_batch(frame)
        times = interleaved({"train": lambda m=model: m.train_on_batch(x, y),  # bound now: `del model` below
                             "infer": lambda m=model: m.predict_on_batch(frame)}, plan.model_steps)
        ips = {"train": batch / median(times["train"]), "infer": len(frame) / median(times["infer"])}
        flops = forward_flops(model if not cfg.crop else build_model(cfg, cfg.size))  # of one whole frame
        cpu_gflops = flops * ips["infer"] / 1e9
        data[name] = {"size": [cfg.height, cfg.width], "batch": batch, "images_per_s": ips, "raw_step_s": times,
                      "gflops_per_image_forward": flops / 1e9, "cpu_achieved_gflops_infer": cpu_gflops}
        row = [name, size, str(batch), f"{ips['train']:.2f}", f"{ips['infer']:.2f}", f"{flops / 1e9:.2f}",
               f"{cpu_gflops:.0f}"]
        if flops < MIN_ESTIMATE_FLOPS:
            rows.append(row + ["n/a (too small: a GPU would be bound by launches, not FLOPs)", "", ""])
        else:
            est = t4_estimate(flops, forward_flops(build_model(cfg, train_hw)) if cfg.crop else None)
            data[name]["t4_estimate"] = est
            rows.append(row + [f"{est['train_fp32']:.0f} / {est['train_fp16']:.0f}",
                               f"{est['infer_fp32']:.0f} / {est['infer_fp16']:.0f}",
                               f"{est['epoch_minutes']:.1f} / {est['predict_minutes']:.0f}"])
        del model
        keras.backend.clear_session()
        gc.collect()
    figs = []
    name = next((n for n in ("unet", "demo") if n in data and "t4_estimate" in data[n]), None)
    if name:  # the headline compares a real-size preset's inference with the T4 estimate
        d = data[name]
        est = d["t4_estimate"]
        figs.append(figure(f"Inference, preset {name} {d['size'][0]}x{d['size'][1]}: T4 ESTIMATE vs this CPU",
                           f"~{est['infer_fp16']:.0f} images/s on one T4, FP16 (estimate)",
                           f"{d['images_per_s']['infer']:.2f} images/s on this CPU (measured)",
                           est["infer_fp16"] / d["images_per_s"]["infer"], "x (estimate)", "(none)", None))
    sec = section("7. Model throughput per preset on this CPU, and a T4 ESTIMATE",
                  f"Each preset's model (`build_model`, seeded weights), compiled with Adam and its loss; batch "
                  f"shown (1 for 640x960 and up); one untimed warm-up step, then {plan.model_steps} timed "
                  f"`train_on_batch` / `predict_on_batch` steps each, alternating; median step. GFLOP/image = "
                  f"2 x multiply-adds of the convolutions (forward); CPU GFLOPS = that x measured inference img/s. "
                  f"**T4 columns are estimates, not measurements**: published T4 peaks "
                  f"{T4_PEAK_TFLOPS['fp32']} TFLOPS FP32 and {T4_PEAK_TFLOPS['fp16']} TFLOPS FP16 tensor cores, "
                  f"times an assumed efficiency of {T4_EFFICIENCY['fp32']:.0%} (FP32) and "
                  f"{T4_EFFICIENCY['fp16']:.0%} (FP16 mixed precision), divided by the model's GFLOP/image; "
                  f"training = 3x the forward FLOPs. Expect them to be right within about 2x; one T4 (Kaggle's "
                  f"T4 x2 has two). Minutes: one epoch of one fold ({TRAIN_IMAGES * 4 // 5:,} images) and "
                  f"predicting the {TEST_IMAGES:,} test images with hflip TTA with one fold, both at the FP16 "
                  f"estimate.",
                  ["preset", "size", "batch", "CPU train img/s", "CPU infer img/s", "GFLOP/img", "CPU GFLOPS",
                   "T4 est. train img/s fp32/fp16", "T4 est. infer img/s fp32/fp16",
                   "T4 est. min: epoch / predict"], rows, data=data)
    return sec, figs
