"""An ensemble of runs: each member is a run with its own input size, fit, folds and TTA, weighted; one run is the
one-member case, predicted and scored by the same code.

Each member predicts at its own resolution (its fold ensemble with TTA) and its probability is brought to native
as an 8-bit map (upsample.py), as for one run. The ensemble's map is the weighted mean of those maps, rounded to
8 bits and thresholded once; with one member it is that member's map, bit for bit. One pass over the images,
streaming: only the current batch's maps exist at any time. A blend's threshold can be tuned and saved in
<runs>/blends/<name>/blend.json (`threshold_for`).
"""
from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..base import records
from ..base.errors import UserError
from ..base.geometry import Geometry
from ..base.images import decode_jpeg
from ..base.records import ListOf, Shape
from ..config import TrainConfig, check_threshold
from ..models.runtime import inference_devices
from ..runs.folder import run_path
from .predictor import Predictor, batched, load_models, load_refiner, ordered_map, prefetch, replicate

BLEND_FILE = "blend.json"
BLEND_SHAPE = Shape("a blend's tuned threshold", required={
    "members": ListOf(Shape("a member", required={"run": "str", "weight": "finite"})), "threshold": "finite"})
_FOLDS = re.compile(r"\d+(,\d+)*")


@dataclass(frozen=True)
class MemberSpec:
    """One `--run NAME[@FOLDS][:WEIGHT]` as typed: the run (a NAME or path as typed, or a Path: that folder), its
    folds (None: --folds or every fold), its weight."""

    run: str | Path
    folds: tuple[int, ...] | None = None
    weight: float = 1.0

    @property
    def path(self) -> Path:
        """The run's folder: a Path as given, a typed NAME or path as `config.run_path` resolves it."""
        return self.run if isinstance(self.run, Path) else run_path(self.run)


def as_specs(runs: Path | str | MemberSpec | list) -> list[MemberSpec]:
    """A run folder (or name), a member, or a list of either -> the members: one run is the one-member ensemble."""
    items = [runs] if isinstance(runs, (Path, str, MemberSpec)) else list(runs)
    return [r if isinstance(r, MemberSpec) else MemberSpec(r) for r in items]


def parse_member(text: str) -> MemberSpec:
    """'unet@0,1:2' -> MemberSpec('unet', (0, 1), 2.0); the '@FOLDS' and ':WEIGHT' parts are optional."""
    run, weight = text, 1.0
    if ":" in run:
        run, _, w = run.rpartition(":")
        try:
            weight = float(w)
        except ValueError:
            raise UserError(f"--run {text!r}: the weight after ':' must be a number, e.g. {run}:0.5") from None
        if not (math.isfinite(weight) and weight > 0):
            raise UserError(f"--run {text!r}: the weight must be a positive number")
    folds = None
    if "@" in run:
        run, _, f = run.rpartition("@")
        if not _FOLDS.fullmatch(f):
            raise UserError(f"--run {text!r}: expected NAME@FOLDS with comma-separated fold numbers, e.g. {run}@0,1")
        folds = tuple(int(x) for x in f.split(","))
        if len(set(folds)) != len(folds):
            raise UserError(f"--run {text!r}: a fold twice in @{f}; each fold once, e.g. {run}@0,1")
    if not run:
        raise UserError(f"--run {text!r}: no run name")
    return MemberSpec(run, folds, weight)


def default_name(specs: list[MemberSpec]) -> str:
    """The blend's name from its runs and weights other than 1: 'unet+unet-1280', 'unetx2+unet-1280'."""
    return "+".join(Path(s.run).name + ("" if s.weight == 1.0 else f"x{s.weight:g}") for s in specs)


def blend_dir(specs: list[MemberSpec], name: str | None = None) -> Path:
    """<runs>/blends/<name>/: beside the first member's run folder (runs/blends/<name> for runs/NAME)."""
    return specs[0].path.parent / "blends" / (name or default_name(specs))


@dataclass
class Member:
    """A loaded member: its run's config, fold models and predictor, and its weight in the blend."""

    run_dir: Path
    label: str
    weight: float
    cfg: TrainConfig
    folds: list[int]
    predictor: Predictor

    @property
    def geometry(self) -> Geometry:
        return self.predictor.geometry


def open_members(specs: list[MemberSpec], folds: list[int] | None, tta: str,
                 refine: str | None = None, scored_fold: int | None = None) -> list[Member]:
    """Load every member's models: its own @FOLDS, else `folds` (--folds), else every trained fold.
    Each member refines its native map as its run's config says, or as `refine` (--refine) says for all; a
    member refined by its refiner net uses the one that never saw `scored_fold`'s photos (None: the test set's,
    all.keras)."""
    seen: dict[tuple, str] = {}
    for s in specs:
        key = (s.path.resolve(), tuple(s.folds or folds or ()))
        if key in seen:
            raise UserError(f"--run {s.run} is given twice ({seen[key]!r} and {s.run!r}): give a run once, with a "
                            f"weight, e.g. --run {s.run}:2")
        seen[key] = s.run
    names = [s.path.name for s in specs]
    members, devices = [], inference_devices()
    for s, name in zip(specs, names):
        run_dir = s.path
        cfg, used, models = load_models(run_dir, list(s.folds) if s.folds else folds)
        label = name if names.count(name) == 1 else str(run_dir) + (f"@{','.join(map(str, used))}" if s.folds else "")
        refiner = None
        if (refine or cfg.refine) == "net":  # each run's own refiner, trained on its own held-out predictions
            refiner = load_refiner(run_dir, scored_fold)
        predictor = Predictor(models, Geometry(cfg.height, cfg.width, cfg.fit), tta, cfg.image_interp,
                              refine or cfg.refine, refiner, replicate(run_dir, used, devices), devices)
        members.append(Member(run_dir, label, s.weight, cfg, used, predictor))
    return members


def blend_native(maps: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The weighted mean of 8-bit native probability maps, rounded to 8 bits (one map: itself)."""
    if len(maps) == 1:
        return maps[0]
    total = np.zeros(maps[0].shape, np.float32)
    for m, w in zip(maps, weights):
        total += np.float32(w) * m
    return cv2.convertScaleAbs(total, alpha=1.0 / sum(weights))  # rounds and saturates to uint8


def native_maps(members: list[Member], probs: list[np.ndarray], read: Callable[[], bytes],
                name: str) -> list[np.ndarray]:
    """Each member's model-resolution probability as its 8-bit native map (what that run alone thresholds);
    `read` gives the photo's JPEG bytes, read at most once, for the members that refine with it."""
    data: list[bytes] = []

    def once() -> bytes:
        if not data:
            data.append(read())
        return data[0]
    return [m.predictor.native(p, once, name) for m, p in zip(members, probs)]


def to_native(members: list[Member], probs: list[np.ndarray], read: Callable[[], bytes], name: str) -> np.ndarray:
    """The blend's 8-bit native probability of one image from its members' model-resolution probabilities."""
    return blend_native(native_maps(members, probs, read, name), [m.weight for m in members])


def probabilities(members: list[Member], ids: list[str], read: Callable[[str], bytes],
                  where: Callable[[str], str], batch: int,
                  workers: int | None = None) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(id, [each member's model-resolution probability]) in order; each JPEG is read once and decoded once per
    distinct JPEG reduction, in threads ahead of the models, which run in their own thread ahead of the caller."""
    workers = workers or min(8, os.cpu_count() or 2)
    reductions = [m.predictor.reduction for m in members]

    def load(image_id: str) -> tuple[str, list[np.ndarray]]:
        data, name = read(image_id), where(image_id)
        decoded: dict[int, np.ndarray] = {}
        inputs = []
        for m, r in zip(members, reductions):
            if r not in decoded:
                decoded[r] = decode_jpeg(data, name, r)
            inputs.append(m.predictor.fit(decoded[r]))
        return image_id, inputs

    replicas = min(m.predictor.replicas for m in members)

    def run(numbered: tuple[int, list]) -> list[tuple[str, list[np.ndarray]]]:
        """One batch through every member, on the device whose turn it is (batch n on device n mod replicas)."""
        number, chunk = numbered
        names, outputs = [c[0] for c in chunk], []
        for i, m in enumerate(members):
            probs = m.predictor(np.stack([c[1][i] for c in chunk]), number % replicas)
            bad = ~np.isfinite(probs).reshape(len(chunk), -1).all(axis=1)
            if bad.any():
                raise UserError(_broken(members, m, where(names[int(np.flatnonzero(bad)[0])])))
            outputs.append(probs)
        return [(name, [p[j] for p in outputs]) for j, name in enumerate(names)]

    def batches() -> Iterator[list[tuple[str, list[np.ndarray]]]]:
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool, \
                ThreadPoolExecutor(replicas, thread_name_prefix="device") as devices:
            chunks = enumerate(batched(ordered_map(pool, load, ids, ahead=(1 + replicas) * batch + workers), batch))
            # `replicas` consecutive batches in flight at most: each on its own device, results in order
            yield from ordered_map(devices, run, chunks, ahead=replicas)

    # The models run in threads of their own, two batches ahead: the caller's waits on post-processing and
    # on the writer no longer pause them (issue 36: end to end at >= 0.8 of the model alone).
    for items in prefetch(batches(), 2, "models"):
        yield from items


def _broken(members: list[Member], m: Member, where: str) -> str:
    if len(members) == 1:
        return (f"the model produced NaN/inf probabilities for {where}; the model is broken (diverged training?) - "
                f"retrain or use other folds")
    return (f"run {m.label} produced NaN/inf probabilities for {where}; its model is broken (diverged training?) - "
            f"retrain it or leave it out of the blend")


def default_batch(members: list[Member]) -> int:
    """One run: its evaluation batch; a blend: the smallest training batch of its runs."""
    if len(members) == 1:
        return members[0].cfg.eval_batch
    return max(1, min(m.cfg.batch for m in members))


# --- the threshold --------------------------------------------------------------------------
def identity(members: list[Member]) -> list[dict]:
    """What a saved threshold was tuned for: each member's run name and weight, in order."""
    return [{"run": m.run_dir.name, "weight": m.weight} for m in members]  # as member_identity


def saved_threshold(folder: Path, members: list[dict]) -> float | None:
    """The threshold `score --tune-threshold` saved in <folder>/blend.json (None: none saved); a one-line error
    when that file is another blend's (other runs or weights)."""
    path = folder / BLEND_FILE
    if not path.is_file():
        return None
    saved = records.load(path, BLEND_SHAPE, f"delete {path} and tune the blend again (`score --run A --run B "
                                            f"--fold K --tune-threshold`), or pass --threshold T")
    if saved["members"] != members:
        was = ", ".join(f"{m['run']}:{m['weight']:g}" for m in saved.get("members") or [])
        now = ", ".join(f"{m['run']}:{m['weight']:g}" for m in members)
        raise UserError(f"{path} holds the threshold of the blend {was}, not of {now}: name this blend otherwise "
                        f"(--blend NAME), pass --threshold T, or delete {path}")
    return check_threshold(float(saved["threshold"]))


def member_identity(specs: list[MemberSpec]) -> list[dict]:
    """`identity` from the specs alone (no models loaded): what `kernel build` looks a saved threshold up by."""
    return [{"run": Path(s.run).name, "weight": s.weight} for s in specs]


def blend_threshold(members: list[Member], folder: Path, threshold: float | None) -> tuple[float, str]:
    """(threshold, where it came from): --threshold, else the one `score --tune-threshold` saved in
    <folder>/blend.json for these runs and weights, else the weighted mean of the members' own thresholds."""
    if threshold is not None:
        return check_threshold(threshold), "--threshold"
    saved = saved_threshold(folder, identity(members))
    if saved is not None:
        return saved, f"tuned, from {folder / BLEND_FILE}"
    total = sum(m.weight for m in members)
    mean = round(sum(m.weight * m.cfg.threshold for m in members) / total, 4)
    return check_threshold(mean), "the weighted mean of the runs' own thresholds"


def describe_members(members: list[Member]) -> str:
    return ", ".join(f"{m.label} (folds {','.join(map(str, m.folds))}, {m.cfg.height}x{m.cfg.width} {m.cfg.fit}, "
                     f"weight {m.weight:g})" for m in members)


