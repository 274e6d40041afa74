"""Benchmarks: every figure is a ratio against a baseline measured side by side in the same run.

`run_bench` times the toolkit's real code against the naive way of doing the same job, alternating
the two within every round (so a noisy neighbour slows both alike) and keeping the median of several
rounds. It writes `results.json` (every raw timing) and `RESULTS.md` (the tables, the method and the
machine). `--quick` runs the same sections on fewer items in well under a minute.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import NATIVE_SHAPE, __version__, rle
from .fileio import write_json, write_text
from .geometry import Geometry
from .progress import say

FIXTURES_ENV = "CARVANA_FIXTURES"
TEST_IMAGES = 100_064      # Kaggle's test set
TRAIN_IMAGES = 5_088       # Kaggle's training set; a fold trains on 4/5 of it
# Published NVIDIA T4 peaks (T4 datasheet): FP32 8.1 TFLOPS, FP16/FP32-accumulate tensor cores 65 TFLOPS.
T4_PEAK_TFLOPS = {"fp32": 8.1, "fp16": 65.0}
# Assumed fraction of peak a Keras U-Net reaches on a T4 (an assumption, stated in RESULTS.md).
T4_EFFICIENCY = {"fp32": 0.5, "fp16": 0.2}
MIN_ESTIMATE_FLOPS = 1e9   # below 1 GFLOP/image a GPU is bound by kernel launches: no FLOP-based estimate


@dataclass(frozen=True)
class Plan:
    """How much of everything a run measures."""

    rounds: int            # timing rounds per figure (the median is reported)
    predict_rounds: int    # rounds for the (slow) end-to-end predict figures
    real_masks: int        # fixture masks for RLE and post-processing (at most the 48 there are)
    synth_cars: int        # synthetic cars (16 views each) for masks, and for training when no fixtures
    test_images: int       # synthetic native-size test images for JPEG decode and predict
    pipeline_images: int   # training images through both input pipelines
    pipeline_epochs: int   # timed epochs after the first
    writer_rows: tuple[int, int]
    presets: tuple[str, ...]  # presets whose throughput is measured (others: "skipped")
    model_steps: int       # timed steps per preset after a warm-up step
    crop_preset: str = "unet-t4"  # section 8: the crop pipeline at this preset's frame and crop
    crop_small: bool = False      # section 8 at a small frame and crop instead (quick)


FULL = Plan(rounds=7, predict_rounds=5, real_masks=48, synth_cars=1, test_images=48, pipeline_images=48,
            pipeline_epochs=3, writer_rows=(10_006, TEST_IMAGES),
            presets=("article-simple", "article-unet", "article-unet-strided", "unet", "unet-1280", "unet-t4",
                     "demo", "real-cpu", "tiny"), model_steps=2)
QUICK = Plan(rounds=3, predict_rounds=1, real_masks=8, synth_cars=1, test_images=4, pipeline_images=8,
             pipeline_epochs=2, writer_rows=(1_000, 4_000), presets=("demo",), model_steps=1, crop_small=True)


# --- timing ---------------------------------------------------------------------------------------
def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each case; every round runs each case once, order reversed on odd rounds."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """Run OpenCV on `n` threads inside the block."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def figure(name: str, ours: str, baseline: str, ratio: float, unit: str, target: str, met: bool | None) -> dict:
    """One headline row: what, our number, the baseline's, the ratio, the target and whether it is met."""
    return {"figure": name, "ours": ours, "baseline": baseline, "ratio": round(ratio, 2), "ratio_unit": unit,
            "target": target, "met": met}


def section(title: str, method: str, columns: list[str], rows: list[list], notes: list[str] | None = None,
            data: dict | None = None) -> dict:
    return {"title": title, "method": method, "columns": columns, "rows": rows, "notes": notes or [],
            "data": data or {}}


# --- inputs ---------------------------------------------------------------------------------------
def fixtures_dir() -> Path | None:
    """The real Carvana samples: $CARVANA_FIXTURES or <repo>/../shared/fixtures/carvana; None if absent."""
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "carvana"
    path = Path(os.environ.get(FIXTURES_ENV, default))
    return path if any(path.glob("*_mask.gif")) else None


@dataclass
class Inputs:
    """What the sections measure on: real fixtures (when found) and a synthetic dataset."""

    fixtures: Path | None
    real_masks: dict[str, np.ndarray]
    synth: object            # competition.data.layout.Dataset with train and test images
    synth_masks: dict[str, np.ndarray]
    train: object            # the Dataset the input pipelines read (the fixtures, else synthetic)
    train_label: str


def prepare(plan: Plan, work: Path) -> Inputs:
    from .data.layout import open_dataset
    from .data.synth import SynthSpec, generate
    from .masks import read_mask
    fixtures = fixtures_dir()
    real: dict[str, np.ndarray] = {}
    if fixtures is not None:
        for path in sorted(fixtures.glob("*_mask.gif"))[:plan.real_masks]:
            real[path.name[:-9]] = read_mask(path)
    cars = plan.synth_cars if fixtures is not None else max(plan.synth_cars, -(-plan.pipeline_images // 16))
    generate(work / "synth", SynthSpec(cars=cars, test=plan.test_images, seed=0))
    synth = open_dataset(work / "synth")
    synth_masks = {i: synth.read_mask(i) for i in synth.train_ids}
    train = open_dataset(fixtures) if fixtures is not None else synth
    label = (f"real Carvana fixtures ({fixtures})" if fixtures is not None
             else "synthetic only: no real fixtures found (set CARVANA_FIXTURES)")
    return Inputs(fixtures, real, synth, synth_masks, train, label)


# --- 1. RLE encode --------------------------------------------------------------------------------
def bench_rle(inputs: Inputs, plan: Plan) -> tuple[dict, list[dict]]:
    sets = {"real": inputs.real_masks, "synthetic": inputs.synth_masks}
    rows, data, figures = [], {}, []
    for label, masks in sets.items():
        if not masks:
            continue
        items = list(masks.values())
        for image_id, m in masks.items():
            if rle.encode(m) != rle.encode_idiom(m):
                raise AssertionError(f"rle.encode differs from the padded idiom on {label} mask {image_id}")

        def run(fn: Callable) -> Callable[[], None]:
            def every_mask() -> None:
                for m in items:
                    fn(m)  # results dropped at once: no memory growth across masks
            return every_mask
        times = interleaved({"ours": run(rle.encode), "idiom": run(rle.encode_idiom),
                             "copy": run(np.copy)}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(items) for k, v in times.items()}
        ratio = ms["idiom"] / ms["ours"]
        data[label] = {"masks": len(items), "ms_per_mask": ms, "raw_s": times, "byte_identical": True}
        rows.append([f"{label} ({len(items)} masks)", f"{ms['ours']:.3f}", f"{ms['idiom']:.3f}",
                     f"{ms['copy']:.3f}", f"**{ratio:.1f}x**"])
        figures.append(figure(f"RLE encode, 1918x1280 {label} masks", f"{ms['ours']:.2f} ms/mask",
                              f"{ms['idiom']:.2f} ms/mask (padded numpy idiom)", ratio, "x faster", ">= 4x",
                              ratio >= 4))
    sec = section("1. RLE encode of native 1918x1280 masks",
                  f"`rle.encode` vs `rle.encode_idiom` (`np.concatenate([[0], m.flatten(), [0]])`, `np.where`, "
                  f"lengths by difference, `' '.join`), uint8 0/1 masks; every output asserted byte-identical "
                  f"before timing. Each round encodes every mask once with each; median of {plan.rounds} rounds. "
                  f"`copy` is one `np.copy` of the mask: the physical floor.",
                  ["masks", "ours ms/mask", "idiom ms/mask", "copy ms/mask", "speed-up"], rows, data=data)
    return sec, figures


# --- 2. Post-processing ---------------------------------------------------------------------------
def probability_map(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A model-like probability map of a native mask at model resolution (soft edges), float32."""
    small = geometry.to_model(mask.astype(np.float32), "area")
    small = small[..., 0] if small.ndim == 3 else small
    return np.clip(cv2.GaussianBlur(small, (0, 0), 1.0), 0.0, 1.0).astype(np.float32)


def naive_native_mask(prob: np.ndarray, geometry: Geometry, threshold: float) -> np.ndarray:
    """The naive order: threshold at model resolution, crop any padding, nearest resize to native."""
    top, left = geometry.offset
    ih, iw = geometry.inner
    binary = (prob[top:top + ih, left:left + iw] > threshold).astype(np.uint8)
    if binary.shape == NATIVE_SHAPE:
        return binary
    return cv2.resize(binary, (NATIVE_SHAPE[1], NATIVE_SHAPE[0]), interpolation=cv2.INTER_NEAREST)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def bench_postprocess(inputs: Inputs, plan: Plan) -> tuple[dict, list[dict]]:
    from .config import preset
    from .predict import postprocess, to_native_mask
    masks = inputs.real_masks or inputs.synth_masks
    rows, data, figures = [], {}, []
    sizes = {}
    for name in ("seed-unet", "unet", "unet-1280"):
        cfg = preset(name)
        sizes.setdefault((cfg.height, cfg.width, cfg.fit), name)
    for (h, w, fit), name in sizes.items():
        geometry = Geometry(h, w, fit)
        probs = {i: probability_map(m, geometry) for i, m in masks.items()}
        out = io.StringIO()

        def ours() -> None:
            for image_id, p in probs.items():
                out.write(f"{image_id}.jpg,{postprocess(p, geometry, 0.5)}\n")

        def naive() -> None:
            for image_id, p in probs.items():
                out.write(f"{image_id}.jpg,{rle.encode_idiom(naive_native_mask(p, geometry, 0.5))}\n")
        with opencv_threads(1):
            times = interleaved({"ours": ours, "naive": naive}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(probs) for k, v in times.items()}
        ratio = ms["naive"] / ms["ours"]
        d_ours = statistics.mean(dice(to_native_mask(probs[i], geometry, 0.5), masks[i]) for i in probs)
        d_naive = statistics.mean(dice(naive_native_mask(probs[i], geometry, 0.5), masks[i]) for i in probs)
        label = f"{h}x{w} {fit} ({name})"
        data[label] = {"images": len(probs), "ms_per_image": ms, "raw_s": times,
                       "dice_vs_true_mask": {"ours": d_ours, "naive": d_naive}}
        rows.append([label, f"{ms['ours']:.2f}", f"{ms['naive']:.2f}", f"**{ratio:.1f}x**",
                     f"{d_ours:.5f}", f"{d_naive:.5f}"])
        figures.append(figure(f"Post-process one image from {h}x{w} ({name})", f"{ms['ours']:.2f} ms/image",
                              f"{ms['naive']:.2f} ms/image (threshold, nearest resize, idiom)", ratio, "x faster",
                              "<= 3 ms/image, 1 thread", ms["ours"] <= 3.0))
    sec = section("2. Post-processing one test image (1 thread)",
                  f"Probability maps made from {len(masks)} {'real' if inputs.real_masks else 'synthetic'} masks "
                  f"(area-downscaled to the model size, Gaussian blur sigma 1 px). Ours: `predict.postprocess` "
                  f"(uint8 quantise, bilinear resize to 1918x1280, threshold, `rle.encode`) and the row written to "
                  f"an in-memory buffer. Naive: threshold at model resolution, nearest resize, `rle.encode_idiom`, "
                  f"same buffer. OpenCV on 1 thread; median of {plan.rounds} rounds. Dice columns: mean dice of "
                  f"each order's native mask against the true mask (quality, not speed).",
                  ["model size", "ours ms/image", "naive ms/image", "speed-up", "dice ours", "dice naive"],
                  rows, data=data)
    return sec, figures


# --- 3. Training input pipeline -------------------------------------------------------------------
def _epoch(dataset) -> None:
    for _ in dataset:
        pass


def bench_pipeline(inputs: Inputs, plan: Plan, work: Path) -> tuple[dict, list[dict]]:
    from .config import AUGMENTS
    from .data.pipeline import build_cache, decode_every_epoch_dataset, make_dataset
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
            _epoch(dataset)
            first[name] = time.perf_counter() - t0
        times = interleaved({k: (lambda d=d: _epoch(d)) for k, d in sets.items()}, plan.pipeline_epochs)
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


# --- 4. JPEG decode -------------------------------------------------------------------------------
def bench_decode(inputs: Inputs, plan: Plan) -> tuple[dict, list[dict]]:
    from .images import decode_jpeg, reduction_for
    sets = {"synthetic test": [inputs.synth.read_test_image(i) for i in inputs.synth.test_ids]}
    if inputs.fixtures is not None:
        sets["real"] = [p.read_bytes() for p in sorted(inputs.fixtures.glob("*.jpg"))[:plan.test_images]]
    rows, data, figures = [], {}, []
    for label, blobs in sets.items():
        for h, w in ((96, 128), (256, 384), (640, 960)):
            geometry = Geometry(h, w, "resize")
            factor = reduction_for(geometry.inner)

            def load(reduce: int) -> Callable[[], None]:
                return lambda: [geometry.to_model(decode_jpeg(b, "bench", reduce), "area") for b in blobs]
            with opencv_threads(1):
                times = interleaved({"full": load(1), "reduced": load(factor)}, plan.rounds)
            ips = {k: len(blobs) / median(v) for k, v in times.items()}
            ratio = ips["reduced"] / ips["full"]
            data[f"{label} {h}x{w}"] = {"images": len(blobs), "reduction": factor, "images_per_s": ips, "raw_s": times}
            rows.append([f"{label} ({len(blobs)})", f"{h}x{w}", f"1/{factor}", f"{ips['full']:.0f}",
                         f"{ips['reduced']:.0f}", f"**{ratio:.1f}x**"])
            if label == "synthetic test" and (h, w) == (640, 960) or label == "real" and (h, w) == (96, 128):
                figures.append(figure(f"JPEG decode + fit to {h}x{w}, {label} 1918x1280",
                                      f"{ips['reduced']:.0f} images/s (1/{factor} decode)",
                                      f"{ips['full']:.0f} images/s (full decode)", ratio, "x faster", "(none)", None))
    sec = section("4. JPEG decode of 1918x1280 images to the model's input (1 thread)",
                  f"`images.decode_jpeg` full vs reduced by `reduction_for(size)` (libjpeg's scaled IDCT), "
                  f"each followed by `Geometry.to_model` (area resize) - exactly `Predictor.load`. OpenCV on one "
                  f"thread; median of {plan.rounds} rounds over all images.",
                  ["images", "model size", "reduction", "full img/s", "reduced img/s", "speed-up"], rows, data=data)
    return sec, figures


# --- 5. Predict end to end ------------------------------------------------------------------------
def bench_predict(inputs: Inputs, plan: Plan, work: Path) -> tuple[dict, list[dict]]:
    import keras

    from .config import preset
    from .models import build_model
    from .predict import Predictor, ordered_map, postprocess, probabilities
    from .submission import SubmissionWriter
    cfg = preset("demo")
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    batch = cfg.batch
    synth = inputs.synth
    sets = {"synthetic": (synth.test_ids, synth.read_test_image)}
    if inputs.fixtures is not None:
        paths = {p.stem: p for p in sorted(inputs.fixtures.glob("*.jpg"))[:plan.test_images]}
        sets["real"] = (list(paths), lambda i: paths[i].read_bytes())
    rows, data, figures = [], {}, []
    for label, (ids, read) in sets.items():
        for tta in ("hflip", "none"):
            predictor = Predictor([model], geometry, tta, cfg.image_interp)
            loaded = [predictor.load(read(i), i) for i in ids]
            batches = [np.stack(loaded[k:k + batch]) for k in range(0, len(loaded), batch)]
            probs = np.concatenate([predictor(b) for b in batches])  # also the warm-up

            def model_only() -> None:
                for b in batches:
                    predictor(b)

            def end_to_end() -> None:
                writer = SubmissionWriter(work / "predict.csv.gz", ids, {"bench": tta})

                def post(item: tuple[str, np.ndarray]) -> tuple[str, str]:
                    return item[0], postprocess(item[1], geometry, cfg.threshold)
                stream = probabilities(predictor, writer.remaining, read, str, batch)
                with ThreadPoolExecutor(2, thread_name_prefix="post") as pool:
                    for image_id, rle_string in ordered_map(pool, post, stream, ahead=2 * batch):
                        writer.add(image_id, rle_string)
                writer.finish()

            def cpu_side() -> None:  # everything but the model, on one thread
                with opencv_threads(1):
                    for image_id, prob in zip(ids, probs):
                        predictor.load(read(image_id), image_id)
                        postprocess(prob, geometry, cfg.threshold)
            times = interleaved({"model": model_only, "end_to_end": end_to_end, "cpu_side": cpu_side},
                                 plan.predict_rounds)
            ips = {k: len(ids) / median(v) for k, v in times.items()}
            side_ms = 1e3 / ips["cpu_side"]
            ratio = ips["end_to_end"] / ips["model"]
            data[f"{label} {tta}"] = {"images": len(ids), "batch": batch, "images_per_s": ips, "raw_s": times,
                                      "cpu_side_ms_per_image_1_thread": side_ms}
            rows.append([f"{label} ({len(ids)})", tta, f"{ips['end_to_end']:.1f}", f"{ips['model']:.1f}",
                         f"**{ratio:.2f}**", f"{1e3 / ips['model']:.1f}", f"{side_ms:.1f}"])
            figures.append(figure(f"Predict end to end, {label} JPEGs, TTA {tta} ({cfg.height}x{cfg.width} demo U-Net)",
                                  f"{ips['end_to_end']:.1f} images/s",
                                  f"{ips['model']:.1f} images/s (model on pre-decoded batches)", ratio,
                                  "of model-only", ">= 0.8", ratio >= 0.8))
    sec = section("5. Predict end to end vs the model alone",
                  f"Native 1918x1280 test JPEGs ({len(synth.test_ids)} synthetic, and real fixture JPEGs when "
                  f"found); fixed `demo` U-Net ({cfg.height}x{cfg.width}, depth {cfg.depth}, {cfg.filters} filters, "
                  f"batch norm; seeded random weights), batch {batch}. End to end: `probabilities` (read + "
                  f"reduced decode + fit in a thread pool ahead of the model) -> `Predictor` -> `postprocess` in "
                  f"a 2-thread pool -> `SubmissionWriter` (.csv.gz). Model-only: the same `Predictor` on the same "
                  f"images pre-decoded into batches. CPU side: read + decode + fit + post-process of every image "
                  f"on one thread, no model. Median of {plan.predict_rounds} alternating rounds.",
                  ["images", "TTA", "end-to-end img/s", "model-only img/s", "ratio", "model ms/img",
                   "CPU side ms/img (1 thread)"], rows,
                  notes=["On a CPU-only machine the decode and post-processing threads compete with the model for "
                         "the same cores (TensorFlow already uses all of them), so they cannot hide behind it; "
                         "each image costs about model time + CPU-side time / cores. On an accelerator the model "
                         "runs elsewhere and the CPU side only has to keep up (it must stay under the model's "
                         "time per image x cores)."],
                  data=data)
    return sec, figures


# --- 6. Submission writer memory ------------------------------------------------------------------
def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def writer_memory(rows: int, strings: list[str], out: Path) -> dict:
    """Peak traced-memory (and RSS) growth while streaming `rows` rows through a SubmissionWriter."""
    from .submission import SubmissionWriter
    ids = [f"{n:012x}_{n % 16 + 1:02d}" for n in range(rows)]  # the caller's id list, as in predict
    gc.collect()
    rss_ok = _reset_peak_rss()
    rss0 = _rss_kb("VmRSS")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    writer = SubmissionWriter(out, ids, {"bench": rows})
    for n, image_id in enumerate(ids):
        writer.add(image_id, strings[n % len(strings)])
    writer.finish()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    hwm = _rss_kb("VmHWM")
    rss_growth = (hwm - rss0) / 1024 if rss_ok and hwm is not None and rss0 is not None else None
    return {"rows": rows, "traced_peak_mb": peak / 2**20, "rss_peak_growth_mb": rss_growth,
            "file_mb": out.stat().st_size / 2**20, "seconds_traced": seconds}


def bench_writer(inputs: Inputs, plan: Plan, work: Path) -> tuple[dict, list[dict]]:
    masks = inputs.real_masks or inputs.synth_masks
    strings = [rle.encode(m) for m in masks.values()]
    mean_len = statistics.mean(len(s) for s in strings)
    results = [writer_memory(n, strings, work / f"writer-{n}.csv.gz") for n in plan.writer_rows]
    small, large = results
    ratio = large["traced_peak_mb"] / max(small["traced_peak_mb"], 1e-9)
    rows = [[f"{r['rows']:,}", f"{r['traced_peak_mb']:.2f}",
             "n/a" if r["rss_peak_growth_mb"] is None else f"{r['rss_peak_growth_mb']:.1f}",
             f"{r['file_mb']:.1f}"] for r in results]
    sec = section("6. Submission writer: peak memory growth while streaming rows",
                  f"`SubmissionWriter` (.csv.gz, 64-row gzip members, fsync and progress record per chunk) fed "
                  f"{len(strings)} real-shaped RLE strings in rotation (mean {mean_len:,.0f} characters); the id "
                  f"list is made before measuring, as `predict` holds it anyway. Peak growth of Python-traced "
                  f"memory (`tracemalloc`, covers zlib's buffers) and of the process' peak RSS (VmHWM reset via "
                  f"/proc/self/clear_refs) over the memory at the start.",
                  ["rows", "traced peak MB", "RSS peak growth MB", "file MB"], rows, data={"runs": results})
    fig = figure(f"Submission writer peak memory, {large['rows']:,} rows", f"{large['traced_peak_mb']:.2f} MB",
                 f"{small['traced_peak_mb']:.2f} MB at {small['rows']:,} rows", ratio, "x (1.0 = independent)",
                 "< 100 MB, independent of rows",
                 large["traced_peak_mb"] < 100 and ratio < 1.5)
    return sec, [fig]


# --- 7. Model throughput --------------------------------------------------------------------------
def conv_flops(model) -> float:
    """Multiply-adds x 2 of the model's convolutions for one image (BN, activations ignored)."""
    from keras import layers
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            kh, kw = layer.kernel_size
            cin, cout = layer.input.shape[-1], layer.filters
            shape = layer.input.shape if isinstance(layer, layers.Conv2DTranspose) else layer.output.shape
            total += 2.0 * shape[1] * shape[2] * kh * kw * cin * cout
    return total


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


def bench_models(plan: Plan) -> tuple[dict, list[dict]]:
    import keras
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # a new model per preset: TensorFlow's retracing warnings are expected

    from .config import PRESETS, preset
    from .losses import make_loss
    from .models import build_model
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
        model = build_model(cfg)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, epsilon=cfg.epsilon),
                      loss=make_loss(cfg.loss, cfg.bce_weight))
        rng = np.random.default_rng(0)
        x = rng.random((batch, *train_hw, 3), dtype=np.float32)
        y = (rng.random((batch, *train_hw, 1)) > 0.5).astype(np.float32)
        frame = x if not cfg.crop else rng.random((1, cfg.height, cfg.width, 3), dtype=np.float32)
        model.train_on_batch(x, y)  # warm-up: traces the train step
        model.predict_on_batch(frame)
        times = interleaved({"train": lambda: model.train_on_batch(x, y),
                             "infer": lambda: model.predict_on_batch(frame)}, plan.model_steps)
        ips = {"train": batch / median(times["train"]), "infer": len(frame) / median(times["infer"])}
        flops = conv_flops(model if not cfg.crop else build_model(cfg, cfg.size))  # of one whole frame
        cpu_gflops = flops * ips["infer"] / 1e9
        data[name] = {"size": [cfg.height, cfg.width], "batch": batch, "images_per_s": ips, "raw_step_s": times,
                      "gflops_per_image_forward": flops / 1e9, "cpu_achieved_gflops_infer": cpu_gflops}
        row = [name, size, str(batch), f"{ips['train']:.2f}", f"{ips['infer']:.2f}", f"{flops / 1e9:.2f}",
               f"{cpu_gflops:.0f}"]
        if flops < MIN_ESTIMATE_FLOPS:
            rows.append(row + ["n/a (too small: a GPU would be bound by launches, not FLOPs)", "", ""])
        else:
            est = t4_estimate(flops, conv_flops(build_model(cfg, train_hw)) if cfg.crop else None)
            data[name]["t4_estimate"] = est
            rows.append(row + [f"{est['train_fp32']:.0f} / {est['train_fp16']:.0f}",
                               f"{est['infer_fp32']:.0f} / {est['infer_fp16']:.0f}",
                               f"{est['epoch_minutes']:.1f} / {est['predict_minutes']:.0f}"])
        del model
        keras.backend.clear_session()
        gc.collect()
    name = next(n for n in ("unet", "demo") if n in data and "t4_estimate" in data[n])
    d = data[name]
    est = d["t4_estimate"]
    fig = figure(f"Inference, preset {name} {d['size'][0]}x{d['size'][1]}: T4 ESTIMATE vs this CPU",
                 f"~{est['infer_fp16']:.0f} images/s on one T4, FP16 (estimate)",
                 f"{d['images_per_s']['infer']:.2f} images/s on this CPU (measured)",
                 est["infer_fp16"] / d["images_per_s"]["infer"], "x (estimate)", "(none)", None)
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
    return sec, [fig]


# --- 8. Crop input pipeline vs what a T4 consumes -----------------------------------------------
def bench_crops(inputs: Inputs, plan: Plan) -> tuple[dict, list[dict]]:
    import tensorflow as tf

    from .config import preset
    from .data.pipeline import make_dataset, streaming
    from .plan import MULTI_GPU_SCALING, SESSIONS, rates_for
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
            _epoch(d)  # untimed: graph building, and `hold` reads the files into memory
        times = interleaved({k: (lambda d=d: _epoch(d)) for k, d in sets.items()}, plan.pipeline_epochs)
    ips = {k: len(ids) / median(v) for k, v in times.items()}
    per_core = ips["memory, 1 thread"]
    ratio = per_core / rates.train_img_s
    kaggle_cores, (_, gpus) = 4, SESSIONS["t4x2"]
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


# --- the run --------------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model, cores, memory and library versions of this run."""
    import keras
    import tensorflow as tf
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = _meminfo_gb()
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    return {"cpu": cpu, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": mem, "os": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "toolkit": __version__, "commit": commit,
            "gpu": [d.name for d in tf.config.list_physical_devices("GPU")], "load_average": _load_average()}


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count means something else was running."""
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _meminfo_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null inside the block (C++ logs that no setting turns off)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices without the absl lines TF_CPP_MIN_LOG_LEVEL cannot hide."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with _stderr_silenced():
        import tensorflow as tf
        tf.config.list_physical_devices()
        tf.constant(0)


def run_bench(out: Path, quick: bool) -> dict:
    """Run every benchmark (fewer items with `quick`), write out/results.json and out/RESULTS.md."""
    quiet_tensorflow()
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = _load_average()
    sections, figures = [], []
    with tempfile.TemporaryDirectory(prefix="competition-bench-") as tmp:
        work = Path(tmp)
        say(f"bench{' --quick' if quick else ''}: preparing inputs")
        inputs = prepare(plan, work)
        steps = [("RLE encode", lambda: bench_rle(inputs, plan)),
                 ("post-processing", lambda: bench_postprocess(inputs, plan)),
                 ("training input pipeline", lambda: bench_pipeline(inputs, plan, work)),
                 ("JPEG decode", lambda: bench_decode(inputs, plan)),
                 ("predict end to end", lambda: bench_predict(inputs, plan, work)),
                 ("submission writer memory", lambda: bench_writer(inputs, plan, work)),
                 ("model throughput", lambda: bench_models(plan)),
                 ("crop input pipeline", lambda: bench_crops(inputs, plan))]
        for label, step in steps:
            t0 = time.perf_counter()
            sec, figs = step()
            sec["seconds"] = round(time.perf_counter() - t0, 1)
            sections.append(sec)
            figures.extend(figs)
            say(f"bench: {label} done in {sec['seconds']:.1f} s")
        fixtures = str(inputs.fixtures) if inputs.fixtures else None
    results = {"quick": quick, "plan": asdict(plan), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "seconds": round(time.perf_counter() - started, 1), "machine": machine(),
               "load_average_before": load_before, "fixtures": fixtures, "headline": figures, "sections": sections,
               "command": "python -m competition bench" + (" --quick" if quick else "")}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_text(out / "RESULTS.md", render_markdown(results))
    say(f"bench: wrote {out / 'results.json'} and {out / 'RESULTS.md'} in {results['seconds']:.0f} s")
    return results


# --- report ---------------------------------------------------------------------------------------
def _table(columns: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def headline_table(results: dict) -> str:
    """The headline figures as a Markdown table (the README's Performance section shows it)."""
    rows = []
    for f in results["headline"]:
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        rows.append([f["figure"], f["ours"], f["baseline"], f"**{f['ratio']:g}** {f['ratio_unit']}", f["target"], met])
    return "\n".join(_table(["figure", "ours", "baseline (same run)", "ratio", "target", "met"], rows))


def render_markdown(results: dict) -> str:
    """RESULTS.md: machine, headline table, then each section's method and table."""
    m = results["machine"]
    lines = [f"# Benchmark results{' (--quick)' if results['quick'] else ''}", "",
             f"`{results['command']}` on {results['date']}, {results['seconds']:.0f} s in all. Every ratio "
             f"compares against a baseline measured in the same run, alternating with it round by round.", "",
             f"**Machine:** {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
             f"{m['memory_gb']} GB RAM, GPU: {', '.join(m['gpu']) or 'none'}; {m['os']}. "
             f"Python {m['python']}, numpy {m['numpy']}, OpenCV {m['opencv']}, TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}, toolkit {m['toolkit']}" + (f" at {m['commit']}" if m["commit"] else "") + ". "
             f"Load average (1/5/15 min) before: {results['load_average_before']}, after: {m['load_average']} "
             f"(near or above the core count means other work shared the CPU; the ratios, measured "
             f"side by side, suffer less from it than the absolute numbers).", "",
             f"**Inputs:** real masks and JPEGs from `{results['fixtures']}`" if results["fixtures"] else
             "**Inputs:** synthetic only - the real fixtures were not found (set CARVANA_FIXTURES).", "",
             "## Headline", "", headline_table(results), ""]
    for sec in results["sections"]:
        lines += [f"## {sec['title']}", "", f"*Method:* {sec['method']} ({sec['seconds']} s)", ""]
        lines += _table(sec["columns"], sec["rows"])
        lines += [""] + [f"- {n}" for n in sec["notes"]] + ([""] if sec["notes"] else [])
    lines += ["Rerun: `make bench` (full, under 10 minutes on 2 cores) or `python -m competition bench --quick` "
              "(under a minute). Raw timings of every round are in `results.json`.", ""]
    return "\n".join(lines)
