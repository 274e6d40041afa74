"""Benchmark section 8. Crop input pipeline."""
from __future__ import annotations

import os

from ..base.geometry import Geometry
from ..config import preset
from ..costs.plan import MULTI_GPU_SCALING, rates_for
from ..kaggle.machines import ACCELERATORS, SESSION_CPU_CORES
from .common import Budget, Inputs, figure, interleaved, median, opencv_threads, section
from .input_pipeline import epoch_seconds


def bench_crops(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    import tensorflow as tf

    from ..data.pipeline import make_dataset, streaming
    cfg = preset(plan.crop_preset)
    rates, _ = rates_for(cfg, "T4", "fp16")  # what one T4 consumes at the preset (measured or estimated)
    frame, crop = ((320, 480), (256, 256)) if plan.crop_small else (cfg.size, cfg.crop)
    geometry = Geometry(*frame, cfg.fit)
    ds = inputs.train
    ids = ds.train_ids[:plan.pipeline_images]
    batch = 8
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def pipeline(hold: bool, threads: int | None):
        data = make_dataset(streaming(ds, ids, geometry, cfg.image_interp, hold=hold), ids, batch, training=True,
                            augment=cfg.augment, rotate=cfg.rotate, contrast=cfg.contrast, crop=crop)
        if threads:
            options = tf.data.Options()
            options.threading.private_threadpool_size = threads
            data = data.with_options(options)
        return data

    sets = {"memory, 1 thread": pipeline(True, 1), "memory": pipeline(True, None), "disk": pipeline(False, None)}
    with opencv_threads(1):  # one decode per tf.data thread: the threads are the parallelism
        for d in sets.values():
            epoch_seconds(d)  # untimed: graph building, and `hold` reads the files into memory
        times = interleaved({k: (lambda d=d: epoch_seconds(d)) for k, d in sets.items()}, plan.pipeline_epochs)
    ips = {k: len(ids) / median(v) for k, v in times.items()}
    per_core = ips["memory, 1 thread"]
    ratio = per_core / rates.train_img_s
    kaggle_cores, gpus = SESSION_CPU_CORES, ACCELERATORS["t4x2"].gpus
    session_need = rates.train_img_s * (1 + MULTI_GPU_SCALING * (gpus - 1))
    target = session_need / kaggle_cores / rates.train_img_s
    label = f"{frame[0]}x{frame[1]} {cfg.fit}, {crop[0]}x{crop[1]} crops"
    data = {"frame": list(frame), "crop": list(crop), "images": len(ids), "batch": batch, "usable_cores": cores,
            "images_per_s": ips, "raw_epoch_s": times, "t4_train_img_s": rates.train_img_s,
            "t4_source": rates.source, "ratio_per_core_to_t4": ratio}
    rows = [[label, f"{ips['memory, 1 thread']:.1f}", f"{ips['memory']:.1f}", f"{ips['disk']:.1f}", str(cores),
             f"{rates.train_img_s:.1f}", f"**{ratio:.2f}**", f"{1 / ratio:.1f}"]]
    fig = figure(f"Crop input pipeline ({label}), one core vs one T4 at {cfg.preset}",
                 f"{per_core:.1f} images/s per core",
                 f"{rates.train_img_s:.1f} images/s one T4 trains ({'ESTIMATE' if 'ESTIMATE' in rates.source else 'measured'})",
                 ratio, "of one T4", f">= {target:.2f} (Kaggle's {kaggle_cores} cores feed a 2x T4 session)",
                 None if plan.crop_small else ratio >= target)
    sec = section(f"8. Crop input pipeline at full resolution vs what one T4 consumes ({cfg.preset})",
                  f"{len(ids)} training images from {inputs.train_label}, fitted to {frame[0]}x{frame[1]} "
                  f"({cfg.fit}), cut to random {crop[0]}x{crop[1]} crops, joint flip/rotate/contrast, batch {batch}: "
                  f"`make_dataset(streaming(...), crop=...)` as `train --cache memory` (files' bytes in RAM, "
                  f"decoded every epoch) and `--cache none` (read from disk too). '1 thread': tf.data's thread "
                  f"pool and OpenCV on one thread - the per-core rate. One untimed epoch each, then "
                  f"{plan.pipeline_epochs} alternating; median. One T4: the training images/s `plan` uses for "
                  f"{cfg.preset} ({rates.source}). Ratio = per-core / one T4; cores per T4 = its inverse."
                  + (" --quick: a small frame and crop, so the ratio is not the preset's." if plan.crop_small else ""),
                  ["frame, crop", "1 thread img/s (per core)", "all cores, memory img/s", "all cores, disk img/s",
                   "usable cores", "one T4 trains img/s", "per core / T4", "cores per T4"], rows, data=data)
    return sec, [fig]
