"""Fold models x TTA -> probabilities at model resolution, decoded ahead of the model in threads; the refiner
net as post-processing threads call it."""
from __future__ import annotations

import collections
import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..base.errors import UserError
from ..base.geometry import Geometry
from ..base.images import decode_jpeg, reduction_for
from ..base.tta import predict_tta, transforms_for
from ..config import TrainConfig, check_refine, load_config
from ..models.refiner import refiner_inputs
from ..models.saving import load_model
from ..runs.folder import (RECORD_REFINER_FROM, REFINER_RECORD, file_sha256, fold_rebuild, read_refiner_record,
                           refiner_path, refiner_sources, trained_folds)
from ..runs.lock import check_free, fold_lock
from .upsample import guide_reduction, refined_native_u8, to_native_u8


def load_models(run_dir: Path, folds: list[int] | None) -> tuple[TrainConfig, list[int], list]:
    """The run's config and the models of the chosen folds (every trained fold by default)."""
    cfg = load_config(run_dir / "config.json")
    available = trained_folds(run_dir)
    folds = folds if folds is not None else available
    if not folds:
        raise UserError(f"{run_dir}: no trained fold (no fold*/model.keras); run `make train FOLD=0` first")
    models = []
    for k in folds:
        path = run_dir / f"fold{k}" / "model.keras"
        if not path.is_file():
            raise UserError(f"{path}: fold {k} is not trained (trained: {available or 'none'})")
        check_free(fold_lock(run_dir, k), "its model.keras is the best so far, not the fold's; wait for the training "
                                          "to end, or leave the fold out (--folds)")
        model = load_model(path, compile=False, rebuild=fold_rebuild(run_dir, k))  # no loss or metrics; any Keras 3
        shape = tuple(model.input_shape[1:3])
        if shape not in (cfg.size, (None, None)):  # (None, None): trained on crops, takes whole frames
            raise UserError(f"{path} takes {shape[0]}x{shape[1]} inputs but {run_dir}/config.json says "
                            f"{cfg.height}x{cfg.width}; the run folder mixes models of different configs")
        models.append(model)
    return cfg, folds, models


def replicate(run_dir: Path, folds: list[int], devices: list[str | None]) -> list[list]:
    """Copies of the folds' models on each of `devices` after the first (where `load_models` put them): predict gives
    each device every n-th batch. Nothing for one device."""
    if len(devices) < 2:
        return []
    import tensorflow as tf
    copies = []
    for device in devices[1:]:
        with tf.device(device):
            copies.append([load_model(run_dir / f"fold{k}" / "model.keras", compile=False,
                                      rebuild=fold_rebuild(run_dir, k)) for k in folds])
    return copies


class Refiner:
    """A trained refiner as predict's post-processing threads call it: (photo, probability) -> probability."""

    def __init__(self, model, path: Path, made: dict | None = None):
        self.model, self.path, self.lock = model, path, threading.Lock()
        self.digest = file_sha256(path)
        self.made = made or {}  # its refiner.json entry: what it learnt from, and how

    def __call__(self, photo: np.ndarray, prob: np.ndarray) -> np.ndarray:
        x = refiner_inputs(photo, prob)[None]
        with self.lock:  # one model, two post-processing threads
            q = np.asarray(self.model.predict_on_batch(x))
        return q[0, ..., 0].astype(np.float32)


def load_refiner(run_dir: Path, fold: int | None) -> Refiner:
    """The refiner for fold `fold`'s photos (None: the test set's), or a one-line UserError saying how to train it."""
    path = refiner_path(run_dir, fold)
    how = f"`python -m competition refiner --run {run_dir} --data DIR`"
    if not path.is_file():
        raise UserError(f"{path}: no refiner for {'the test set' if fold is None else f'fold {fold}'}; train it "
                        f"with {how} once the folds are trained")
    retrain = f"train it again with {how}"
    entry = read_refiner_record(run_dir, f"delete it and {retrain}").get(path.name) or {}
    sources = entry.get("sources") or {}
    refiner_from = entry.get(RECORD_REFINER_FROM, "held-out")
    try:
        current = refiner_sources(run_dir, [int(k[4:]) for k in sources], refiner_from)
    except OSError:
        current = None
    if not sources or current != sources:
        what = "held-out predictions" if refiner_from == "held-out" else "fold models"
        again = how if refiner_from == "held-out" else how[:-1] + " --refiner-from training`"
        raise UserError(f"{path} learnt from {what} that have changed since (a fold retrained?) or "
                        f"are not recorded in {REFINER_RECORD}: run {again} again")
    return Refiner(load_model(path, compile=False, rebuild=f"delete it and {retrain}"), path, entry)


@dataclass
class Predictor:
    """Fold models x TTA transforms -> mean probability at model resolution."""

    models: list
    geometry: Geometry
    tta: str = "hflip"
    interp: str = "area"
    refine: str = "none"  # how `native` brings a probability to 1918x1280: "none" | "guided" | "net" (upsample.py)
    refiner: Callable | None = None  # refine="net": the second-stage net (Refiner)
    copies: list = field(default_factory=list)  # the models again on each further device (`replicate`)
    devices: list = field(default_factory=lambda: [None])  # where models, then each copy, live

    def __post_init__(self) -> None:
        self.transforms = transforms_for(self.tta)
        check_refine(self.refine)
        if (self.refine == "net") != (self.refiner is not None):
            raise ValueError(f"refine={self.refine!r} with{'out' if self.refiner is None else ''} a refiner net")

    def load(self, data: bytes, name: str) -> np.ndarray:
        """Decode a JPEG (reduced where possible) and fit it to the model: uint8 (H, W, 3)."""
        return self.fit(decode_jpeg(data, name, self.reduction))

    @property
    def reduction(self) -> int:
        """The JPEG reduction (1, 2, 4, 8) this predictor decodes its photos at."""
        return reduction_for(self.geometry.inner)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """A decoded photo fitted to the model's input."""
        return self.geometry.to_model(image, self.interp)

    @property
    def replicas(self) -> int:
        """How many devices hold the models (batches go to them in turn)."""
        return 1 + len(self.copies)

    def __call__(self, batch: np.ndarray, replica: int = 0) -> np.ndarray:
        """uint8 (B, H, W, 3) -> float32 (B, H, W) probabilities, averaged over models and TTA, computed on the
        `replica`-th device's copy of the models (the same weights: the same numbers)."""
        models = self.copies[replica - 1] if replica else self.models
        x = batch.astype(np.float32) / 255.0
        with _on(self.devices[replica]):
            total = sum(predict_tta(m.predict_on_batch, x, self.transforms) for m in models)
        return (total / len(models))[..., 0]

    def native(self, prob: np.ndarray, read: Callable[[], bytes], name: str) -> np.ndarray:
        """One image's model-resolution probability -> its 8-bit native map. `read` gives the photo's JPEG
        bytes; it is only called when the run refines (the photo, decoded small, guides the upsampling)."""
        if self.refine == "none":
            return to_native_u8(prob, self.geometry)
        guide = decode_jpeg(read(), name, guide_reduction(self.geometry))
        return refined_native_u8(prob, self.geometry, guide, self.refiner)


def _on(device: str | None):
    """TensorFlow's device scope for `device` (None: wherever TensorFlow places it)."""
    if device is None:
        return contextlib.nullcontext()
    import tensorflow as tf
    return tf.device(device)


def ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """pool.map that keeps at most `ahead` items in flight (bounded memory), results in order."""
    queue: collections.deque[Future] = collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def prefetch(items: Iterable, depth: int, name: str = "prefetch") -> Iterator:
    """`items`, produced in a thread of their own up to `depth` ahead of the consumer: a stage (the models)
    keeps running while the consumer waits on another (post-processing, the writer). Its exceptions are raised
    here, in order; closing this generator early stops the producer at its next item."""
    box: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                box.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
        except BaseException as e:  # noqa: BLE001  handed to the consumer, raised there
            put((end, e))
            return
        finally:
            getattr(items, "close", lambda: None)()  # a generator's own `with` blocks end here, in this thread
        put((end, None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            x, error = box.get()
            if error is not None:
                raise error
            if x is end:
                return
            yield x
    finally:
        stop.set()
        thread.join()


def batched(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
