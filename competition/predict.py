"""Inference: fold ensembles with TTA, pipelined decoding and post-processing, streamed RLE CSV.

Decoding runs ahead of the model in a thread pool; the model sees batches; post-processing
(resize to native 1918x1280 - with the photo's edges when the run refines, see refine.py - threshold,
RLE) runs in another pool while the next batch is on the model; rows are written in sample order by the
resumable `SubmissionWriter`.
"""
from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from . import rle
from .config import TrainConfig, check_refine, check_threshold, load_config, refine_words
from .data.layout import open_dataset
from .errors import UserError
from .geometry import Geometry
from .images import decode_jpeg, reduction_for
from .progress import bar, say
from .submission import SubmissionWriter, check_valid
from .tta import plan, predict_tta


def trained_folds(run_dir: Path) -> list[int]:
    """Folds of a run that have a model.keras."""
    return sorted(int(p.parent.name[4:]) for p in run_dir.glob("fold*/model.keras") if p.parent.name[4:].isdigit())


def load_models(run_dir: Path, folds: list[int] | None) -> tuple[TrainConfig, list[int], list]:
    """The run's config and the models of the chosen folds (every trained fold by default)."""
    from .models.saving import load_model
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
        model = load_model(path, compile=False)  # inference needs no loss or metrics; any Keras 3 (Kaggle's)
        shape = tuple(model.input_shape[1:3])
        if shape not in (cfg.size, (None, None)):  # (None, None): trained on crops, takes whole frames
            raise UserError(f"{path} takes {shape[0]}x{shape[1]} inputs but {run_dir}/config.json says "
                            f"{cfg.height}x{cfg.width}; the run folder mixes models of different configs")
        models.append(model)
    return cfg, folds, models


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_digests(run_dir: Path, folds: list[int], name: str = "model.keras") -> dict[str, str]:
    """fold<k> -> sha256 of its `name` (model.keras: which models made a (partial) prediction's rows; oof.npz:
    which held-out predictions a refiner learnt from)."""
    return {f"fold{k}": file_sha256(run_dir / f"fold{k}" / name) for k in folds}


@dataclass
class Predictor:
    """Fold models x TTA transforms -> mean probability at model resolution."""

    models: list
    geometry: Geometry
    tta: str = "hflip"
    interp: str = "area"
    refine: str = "none"  # how `native` brings a probability to 1918x1280: "none" | "guided" | "net" (refine.py)
    refiner: Callable | None = None  # refine="net": the second-stage net (refinenet.Refiner)

    def __post_init__(self) -> None:
        self.transforms = plan(self.tta)
        check_refine(self.refine)
        if (self.refine == "net") != (self.refiner is not None):
            raise ValueError(f"refine={self.refine!r} with{'out' if self.refiner is None else ''} a refiner net")

    def load(self, data: bytes, name: str) -> np.ndarray:
        """Decode a JPEG (reduced where possible) and fit it to the model: uint8 (H, W, 3)."""
        image = decode_jpeg(data, name, reduction_for(self.geometry.inner))
        return self.geometry.to_model(image, self.interp)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> float32 (B, H, W) probabilities, averaged over models and TTA."""
        x = batch.astype(np.float32) / 255.0
        total = sum(predict_tta(m.predict_on_batch, x, self.transforms) for m in self.models)
        return (total / len(self.models))[..., 0]

    def native(self, prob: np.ndarray, read: Callable[[], bytes], name: str) -> np.ndarray:
        """One image's model-resolution probability -> its 8-bit native map. `read` gives the photo's JPEG
        bytes; it is only called when the run refines (the photo, decoded small, guides the upsampling)."""
        if self.refine == "none":
            return to_native_u8(prob, self.geometry)
        from .refine import guide_reduction, refined_native_u8
        guide = decode_jpeg(read(), name, guide_reduction(self.geometry))
        return refined_native_u8(prob, self.geometry, guide, self.refiner)


def ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """pool.map that keeps at most `ahead` items in flight (bounded memory), results in order."""
    queue: collections.deque[Future] = collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def batched(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def probabilities(predictor: Predictor, ids: list[str], read: Callable[[str], bytes], where: Callable[[str], str],
                  batch: int, workers: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(id, model-resolution probability) in order; decoding runs ahead of the model in threads."""
    workers = workers or min(8, os.cpu_count() or 2)

    def load(image_id: str) -> tuple[str, np.ndarray]:
        return image_id, predictor.load(read(image_id), where(image_id))

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        for chunk in batched(ordered_map(pool, load, ids, ahead=2 * batch + workers), batch):
            names = [c[0] for c in chunk]
            probs = predictor(np.stack([c[1] for c in chunk]))
            bad = ~np.isfinite(probs).reshape(len(chunk), -1).all(axis=1)
            if bad.any():
                name = names[int(np.flatnonzero(bad)[0])]
                raise UserError(f"the model produced NaN/inf probabilities for {where(name)}; the model is broken "
                                f"(diverged training?) - retrain or use other folds")
            yield from zip(names, probs)


def to_native_u8(prob: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Model-resolution probability -> 8-bit probability (0..255) at native size, resized bilinearly.

    Resizing 8-bit probabilities is several times faster than float32, and the quantisation
    (1/255) only moves pixels whose probability is within 0.002 of the threshold.
    """
    return geometry.from_model(cv2.convertScaleAbs(prob, alpha=255.0))  # rounds and saturates to uint8


def threshold_native(native_u8: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 uint8 mask of the pixels whose 8-bit probability is above `threshold` * 255."""
    _, mask = cv2.threshold(native_u8, threshold * 255.0, 1, cv2.THRESH_BINARY)
    return mask


def to_native_mask(prob: np.ndarray, geometry: Geometry, threshold: float) -> np.ndarray:
    """Model-resolution probability -> native 0/1 uint8 mask: quantise, resize bilinearly, threshold."""
    return threshold_native(to_native_u8(prob, geometry), threshold)


def postprocess(prob: np.ndarray, geometry: Geometry, threshold: float,
                native: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
    """Probability map at model resolution -> RLE string of the native mask. `native` makes the 8-bit native map
    when the run refines it (`Predictor.native` for this image); by default it is resized alone."""
    if native is None:
        return rle.encode(to_native_mask(prob, geometry, threshold))
    return rle.encode(threshold_native(native(prob), threshold))


def shard_slice(ids: list[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return ids
    i, n = shard
    return ids[len(ids) * i // n: len(ids) * (i + 1) // n]


def shard_path(out: Path, shard: tuple[int, int] | None) -> Path:
    """submissions/x.csv.gz -> submissions/x.shard-0-of-4.csv.gz"""
    if shard is None:
        return out
    name = out.name
    stem, ext = (name[:-7], ".csv.gz") if name.endswith(".csv.gz") else (out.stem, out.suffix)
    return out.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}{ext}")


def predict(run_dir: Path, data: str | None, out: Path, folds: list[int] | None = None, tta: str = "hflip",
            threshold: float | None = None, batch: int | None = None, shard: tuple[int, int] | None = None,
            limit: int | None = None, time_limit=None, mirror: Path | None = None,
            refine: str | None = None) -> Path | None:
    """Predict the test set into a (resumable) submission file; returns its path (None: stopped by time_limit).

    time_limit: a `timelimit.Deadline`: stop after the chunk whose successor would cross it (the same command
    resumes). mirror: a folder that gets the partial file and its progress record as each chunk is written.
    refine: "none" | "guided" | "net", else the run's (config.json); "net" refines with R/refiner/all.keras."""
    if not (out.name.endswith(".csv") or out.name.endswith(".csv.gz")):
        raise UserError(f"--out {out}: the submission must end in .csv or .csv.gz")
    plan(tta)
    if threshold is not None:
        check_threshold(threshold)  # before the models load: a mistyped option answers at once
    if refine is not None:
        check_refine(refine)  # before the models load, as the threshold
    ds = open_dataset(data)
    cfg, folds, models = load_models(run_dir, folds)
    threshold = cfg.threshold if threshold is None else threshold
    refine = refine or cfg.refine
    all_ids = ds.test_ids
    ids = shard_slice(all_ids[:limit] if limit else all_ids, shard)
    target = shard_path(out, shard)
    refiner = None
    if refine == "net":  # trained on every fold's held-out photos
        from .refinenet import load_refiner
        refiner = load_refiner(run_dir, None)
    meta = {"run": str(run_dir), "folds": folds, "tta": tta, "threshold": threshold, "shard": list(shard or []),
            "models": model_digests(run_dir, folds), **refine_meta(refine)}
    if refiner is not None:  # its bytes, and what it learnt from and how (shards' refiners differ in the bytes)
        meta["refiner"], meta["refiner_made"] = refiner.digest, refiner.made
    writer = SubmissionWriter(target, ids, meta, mirror=mirror)
    if writer.done:
        say(f"resuming {target}: {writer.done} of {len(ids)} rows already written")
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    predictor = Predictor(models, geometry, tta, cfg.image_interp, refine, refiner)
    batch = batch or cfg.eval_batch
    todo = writer.remaining

    def post(item: tuple[str, np.ndarray]) -> tuple[str, str]:
        image_id, prob = item  # Predictor.native reads the photo only when the run refines
        return image_id, postprocess(prob, geometry, threshold,
                                     lambda p: predictor.native(p, lambda: ds.read_test_image(image_id),
                                                                ds.where_test(image_id)))

    stream = probabilities(predictor, todo, ds.read_test_image, ds.where_test, batch)
    return write_stream(writer, target, stream, post, batch, len(ids), all_ids, time_limit, shard, limit,
                        f"folds {folds}, TTA {tta}, threshold {threshold}{refine_words(refine)}")


def refine_meta(*refine: str) -> dict:
    """The refinement (each blend member's) in a partial submission's record: absent when all are off, so files
    begun before it existed still resume."""
    return {} if all(r == "none" for r in refine) else {"refine": refine[0] if len(refine) == 1 else list(refine)}


def write_stream(writer: SubmissionWriter, target: Path, stream: Iterable, post: Callable, batch: int, rows: int,
                 all_ids: list[str], time_limit, shard: tuple[int, int] | None, limit: int | None,
                 what: str) -> Path:
    """Turn (id, probabilities) items into RLE rows on two threads, in order, into the writer; stop for
    --time-limit after a chunk; then finish the file and validate it when it holds the whole test set.

    Shared by one run's prediction and a blend's: `post` maps an item to (id, rle string); `what` describes
    the prediction in the closing line."""
    with ThreadPoolExecutor(2, thread_name_prefix="post") as pool, \
            bar(total=rows, initial=writer.done, desc=f"predict {target.name}") as b:
        clock = _ChunkClock(writer, time_limit)
        for image_id, rle_string in ordered_map(pool, post, stream, ahead=2 * batch):
            writer.add(image_id, rle_string)
            b.update()
            if clock.stop():
                break
    if clock.stopped:
        return _stop_for_time(writer, time_limit)
    path = writer.finish()
    if writer.mirror is not None:
        writer.mirror.remove()
    if shard is None and not limit:
        n = check_valid(path, [f"{i}.jpg" for i in all_ids])
        say(f"wrote {path}: {n} rows, {what}; validated against the sample submission")
    else:
        say(f"wrote {path}: {rows} rows" + (f" (shard {shard[0]} of {shard[1]}; join with "
                                             f"`python -m competition merge`)" if shard else ""))
    return path


class _ChunkClock:
    """--time-limit for predict: times each recorded chunk; stop() is True once the next would cross the limit."""

    def __init__(self, writer: SubmissionWriter, deadline):
        import time
        self.writer, self.deadline, self.clock = writer, deadline, time.monotonic
        self.done, self.started, self.stopped = writer.done, self.clock(), False

    def stop(self) -> bool:
        if self.deadline is None or self.writer.done == self.done or self.writer.done == len(self.writer.ids):
            return False  # no limit, mid-chunk (never stop there: the chunks must line up on resume), or done
        now = self.clock()
        self.stopped = self.deadline.step_done(now - self.started)
        self.done, self.started = self.writer.done, now
        return self.stopped


def _stop_for_time(writer: SubmissionWriter, deadline) -> None:
    from .timelimit import describe
    say(f"stopped {writer.part} after {writer.done} of {len(writer.ids)} rows: another chunk (up to "
        f"{describe(max(deadline.steps))}) would pass the time limit of {describe(deadline.limit)}; "
        f"run the same command again to resume")
    return None
