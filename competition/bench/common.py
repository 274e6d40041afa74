"""What every benchmark section shares: the plan of a run, interleaved timing, headline figures and the
inputs (real fixtures when found, a synthetic dataset)."""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..base.masks import read_mask
from ..costs.facts import TEST_IMAGES
from ..data.layout import open_dataset

FIXTURES_ENV = "CARVANA_FIXTURES"


@dataclass(frozen=True)
class Budget:
    """How much of everything a run measures."""

    rounds: int            # timing rounds per figure (the median is reported)
    predict_rounds: int    # rounds for the (slow) end-to-end predict figures
    predict_fit_epochs: int  # section 5 trains its net this long first, so its masks are a trained net's (0: not)
    real_masks: int        # fixture masks for RLE and post-processing (at most the 48 there are)
    synth_cars: int        # synthetic cars (16 views each) for masks, and for training when no fixtures
    test_images: int       # synthetic native-size test images for JPEG decode and predict
    pipeline_images: int   # training images through both input pipelines
    pipeline_epochs: int   # timed epochs after the first
    writer_rows: tuple[int, int]
    presets: tuple[str, ...]  # presets whose throughput is measured (others: "skipped")
    model_steps: int       # timed steps per preset after a warm-up step
    crop_preset: str = "full"  # section 8: the crop pipeline at this preset's frame and crop
    crop_small: bool = False      # section 8 at a small frame and crop instead (quick)
    xla_presets: tuple[str, ...] = ("demo",)  # section 9: training steps with and without XLA (demo = cpu net)
    xla_batch: int = 0            # section 9's batch (0: the preset's)


FULL = Budget(rounds=7, predict_rounds=5, predict_fit_epochs=3, real_masks=48, synth_cars=1, test_images=48,
            pipeline_images=48, pipeline_epochs=3, writer_rows=(10_006, TEST_IMAGES),
            presets=("article-simple", "article-unet", "article-unet-strided", "unet", "unet-1280", "full",
                     "demo", "cpu", "tiny"), model_steps=2)
QUICK = Budget(rounds=2, predict_rounds=1, predict_fit_epochs=0, real_masks=4, synth_cars=1, test_images=4,
             pipeline_images=8, pipeline_epochs=2, writer_rows=(1_000, 4_000), presets=("demo",), model_steps=1,
             crop_small=True, xla_presets=("tiny",), xla_batch=2)


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
    default = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "carvana"
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


def prepare(plan: Budget, work: Path) -> Inputs:
    from ..data.synth import SynthSpec, generate
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


