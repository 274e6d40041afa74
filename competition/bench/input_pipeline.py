"""Benchmark section 3. Training input pipeline."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..base.geometry import Geometry
from ..config import AUGMENTS
from .common import Budget, Inputs, figure, interleaved, median, section


def epoch_seconds(dataset) -> None:
    for _ in dataset:
        pass


def bench_pipeline(inputs: Inputs, plan: Budget, work: Path) -> tuple[dict, list[dict]]:
    from ..data.pipeline import build_cache, decode_every_epoch_dataset, make_dataset
    ds = inputs.train
    ids = ds.train_ids[:plan.pipeline_images]
    batch = 8
    rows, data, figures = [], {}, []
    for h, w in ((96, 128), (256, 384)):
        geometry = Geometry(h, w, "resize")
        t0 = time.perf_counter()
        cache = build_cache(ds, ids, geometry, "area", work / "cache", workers=os.cpu_count())
        build_s = time.perf_counter() - t0
        sets = {"cache": make_dataset(cache, ids, batch, training=True),
                "cache+augment": make_dataset(cache, ids, batch, training=True, augment=AUGMENTS),
                "article": decode_every_epoch_dataset(ds, ids, geometry, batch)}
        first = {}
        for name, dataset in sets.items():  # the first epoch: graph building, cold caches; not timed below
            t0 = time.perf_counter()
            epoch_seconds(dataset)
            first[name] = time.perf_counter() - t0
        times = interleaved({k: (lambda d=d: epoch_seconds(d)) for k, d in sets.items()}, plan.pipeline_epochs)
        ips = {k: len(ids) / median(v) for k, v in times.items()}
        ratio = ips["cache"] / ips["article"]
        data[f"{h}x{w}"] = {"images": len(ids), "batch": batch, "images_per_s": ips, "raw_epoch_s": times,
                            "first_epoch_s": first, "cache_build_s": build_s}
        rows.append([f"{h}x{w}", f"{ips['cache']:.0f}", f"{ips['cache+augment']:.0f}", f"{ips['article']:.1f}",
                     f"**{ratio:.0f}x**", f"{build_s:.2f}"])
        figures.append(figure(f"Training input pipeline at {h}x{w}", f"{ips['cache']:.0f} images/s",
                              f"{ips['article']:.1f} images/s (decode every epoch)", ratio, "x faster", ">= 10x",
                              ratio >= 10))
    sec = section("3. Training input pipeline, images/s after the first epoch",
                  f"{len(ids)} training images from {inputs.train_label}, batch {batch}. Ours: "
                  f"`build_cache` (once, timed separately) then `make_dataset` (shuffle, gather from the memmap, "
                  f"float32, prefetch), without and with the joint flip/rotate/contrast augmentation. Article: "
                  f"`decode_every_epoch_dataset` (read, full JPEG decode, read the GIF mask, resize - every "
                  f"epoch). One untimed first epoch each, then {plan.pipeline_epochs} timed epochs alternating "
                  f"the three; median epoch. Speed-up: cache (no augment) vs article (which has none).",
                  ["size", "cache img/s", "cache+augment img/s", "article img/s", "speed-up", "cache build s"],
                  rows, data=data)
    return sec, figures
