"""Training the refiner net (models/refiner.py), the second stage that corrects the upsampled probability with the
photo, on crops along the outline.

The first-stage U-Net sees each photo at 160x240 and draws the car's outline a model pixel or two off. The
refiner sees the same photo at the guide's resolution (a 1/4 JPEG decode for a 160x240 model:
inference/upsample.py) beside the first stage's probability resized to it, and outputs a correction to that
probability's logit.

It must learn from probabilities like those it will refine: a long-trained net's probabilities on its own
training photos are near perfect. So by default it trains on out-of-fold probabilities (each fold's
`oof.npz`, the held-out photos of that fold's model), which exist only once several folds are trained.
`python -m competition refiner --run R --data D` trains, under R/refiner/:
- `fold<k>.keras` for each trained fold k, from every other fold's held-out photos: `score --fold k` and
  `cv` refine fold k's photos with it, so no photo is scored by a refiner that learnt from it;
- `all.keras` from every fold's held-out photos: what `predict` refines the test set with.

`--refiner-from training` instead trains `fold<k>.keras` on fold k's own training photos with fold k's model's
probabilities on them (still never a photo of fold k), and `all.keras` is a copy of the first trained fold's
(one fold's photos in memory at a time): one finished fold is enough. It is for short runs, whose training
dice is still near their validation dice (8 epochs of `cpu`: 0.9806 against 0.9801), so their errors on
training photos look like those on new ones.

`refine="net"` (a run's config, or `--refine net`) runs the refiner, then the guided filter of inference/upsample.py,
then the resize to native (inference/). Measured on real photos: CHANGELOG.md, "Refiner net".
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import copy_file, write_json, zip_intact
from ..base.geometry import Geometry
from ..config import REFINER_STEPS, load_config
from ..data.layout import open_dataset
from ..models.refiner import CHANNELS, DILATIONS, build_refiner, refiner_inputs
from ..models.runtime import build_optimizer, jit_compile, machine_policy
from ..models.saving import save_model
from ..runs.folder import (RECORD_REFINER_FROM, REFINER_DIR, REFINER_FROM_FILE, REFINER_RECORD, REFINER_STOPPED_AT,
                           fold_dir, load_oof, read_refiner_record, refiner_path, refiner_sources, trained_folds, training_ids)
from ..runs.lock import check_free, fold_lock
from ..runs.resume import is_finished

CROP = 96                    # training crops (guide pixels)
BATCH = 16
STEPS = REFINER_STEPS        # a run's config (refiner_steps) may ask for another number
LR = 2e-3                    # peak of a 100-step warm-up then cosine decay to 0
WARMUP = 100
ALONG_OUTLINE = 0.8          # share of crops centred within 5 px of where the first stage is unsure (0.05..0.95)


def refiner_policy(mixed_precision: bool) -> str:
    """The dtype policy a run's refiner trains in: bfloat16 where its first stage trains in bfloat16 (a
    mixed-precision run on a CPU with bfloat16 instructions: 2,000 steps of cpu's refiner in about 2.5
    minutes instead of 6), else float32 (on a GPU the refiner is cheap beside the first stage)."""
    policy = machine_policy(mixed_precision)
    return policy if policy == "mixed_bfloat16" else "float32"


@dataclass
class Samples:
    """Held-out photos of some folds at the guide's resolution: photo, first-stage probability, true mask."""

    ids: list[str]
    photos: np.ndarray  # (N, H, W, 3) uint8
    probs: np.ndarray   # (N, H, W) uint8, the out-of-fold probability resized to the photo
    masks: np.ndarray   # (N, H, W) uint8, the true mask area-resized to the photo (soft edges)


def fold_samples(run_dir: Path, fold: int, ds, geometry: Geometry) -> Samples:
    """Fold `fold`'s held-out photos with its model's out-of-fold probabilities (fold<k>/oof.npz)."""
    path = run_dir / f"fold{fold}" / "oof.npz"
    if not path.is_file():
        raise UserError(f"{path}: missing; the refiner learns from each trained fold's held-out probabilities "
                        f"(train writes it when the fold finishes)")
    ids, probs = load_oof(path)
    return _samples(ds, geometry, ids, probs)


def training_samples(run_dir: Path, fold: int, ds, cfg) -> Samples:
    """Fold `fold`'s own training photos with its model's probabilities on them (no TTA, uint8 as oof.npz),
    decoded and predicted the way score and predict do (their Predictor)."""
    from ..inference.predictor import Predictor, load_models
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    ids = training_ids(run_dir, cfg, fold)
    _, _, models = load_models(run_dir, [fold])
    predictor = Predictor(models, geometry, "none", cfg.image_interp)
    probs = np.empty((len(ids), cfg.height, cfg.width), np.uint8)  # a fold's training photos: 8-bit, as oof.npz
    for start in range(0, len(ids), cfg.eval_batch):
        chunk = ids[start:start + cfg.eval_batch]
        batch = np.stack([predictor.load(ds.read_train_image(i), ds.where_train(i)) for i in chunk])
        probs[start:start + len(chunk)] = np.clip(np.rint(predictor(batch) * 255), 0, 255)
    return _samples(ds, geometry, ids, probs)


def prepare_photo(ds, image_id: str, cfg) -> None:
    """One photo's preparation for the refiner, as training_samples and _samples do it (`train --budget` times it):
    decoded at the model's size and at the guide's, its mask read."""
    from ..base.images import decode_jpeg, reduction_for
    from ..inference.upsample import guide_reduction
    data, name = ds.read_train_image(image_id), ds.where_train(image_id)
    decode_jpeg(data, name, reduction_for(cfg.size))
    decode_jpeg(data, name, guide_reduction(Geometry(cfg.height, cfg.width, cfg.fit)))
    ds.read_mask(image_id)


def _samples(ds, geometry: Geometry, ids: list[str], probs: np.ndarray) -> Samples:
    """Photos at the guide's size, probabilities (model size, 0..1 or uint8) resized to it, and the true masks."""
    from ..base.images import decode_jpeg
    from ..inference.upsample import guide_reduction
    reduction = guide_reduction(geometry)
    photos, ps, masks = [], [], []
    for image_id, prob in zip(ids, probs):
        prob = prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else prob
        photo = decode_jpeg(ds.read_train_image(image_id), ds.where_train(image_id), reduction)
        h, w = photo.shape[:2]
        p = geometry.from_model(prob, size=(h, w))
        mask = cv2.resize(ds.read_mask(image_id).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        photos.append(photo)
        ps.append(cv2.convertScaleAbs(np.clip(p, 0, 1), alpha=255.0))
        masks.append(cv2.convertScaleAbs(mask, alpha=255.0))
    return Samples(ids, np.stack(photos), np.stack(ps), np.stack(masks))


def joined(samples: list[Samples]) -> Samples:
    if len(samples) == 1:  # all.keras from one fold: no copy
        return samples[0]
    return Samples([i for s in samples for i in s.ids], *(np.concatenate([getattr(s, k) for s in samples])
                                                          for k in ("photos", "probs", "masks")))


def crop_sampler(s: Samples, crop: int, seed: int) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """n -> (inputs (n, crop, crop, 4), targets (n, crop, crop, 1)): crops centred along the first stage's
    outline (ALONG_OUTLINE of them) or anywhere, each flipped left-right at random."""
    rng = np.random.default_rng(seed)
    n, h, w = s.probs.shape
    crop = min(crop, h, w)
    unsure = [np.argwhere(cv2.dilate(((p > 12) & (p < 243)).astype(np.uint8), np.ones((11, 11), np.uint8)))
              for p in s.probs]

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(count):
            k = int(rng.integers(n))
            if rng.random() < ALONG_OUTLINE and len(unsure[k]):
                cy, cx = unsure[k][rng.integers(len(unsure[k]))]
            else:
                cy, cx = rng.integers(h), rng.integers(w)
            y0, x0 = int(np.clip(cy - crop // 2, 0, h - crop)), int(np.clip(cx - crop // 2, 0, w - crop))
            win = np.s_[y0:y0 + crop, x0:x0 + crop]
            x = refiner_inputs(s.photos[k][win], s.probs[k][win].astype(np.float32) / 255.0)
            y = s.masks[k][win][..., None].astype(np.float32) / 255.0
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)
    return draw


def new_refiner(steps: int, policy: str = "float32"):
    """A refiner compiled to train `steps` batches: its warm-up then cosine decay to 0 over exactly those steps."""
    import keras
    model = build_refiner(policy=policy)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(1, steps), warmup_target=LR,
                                                      warmup_steps=min(WARMUP, steps // 2))
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0), loss="binary_crossentropy",
                  jit_compile=jit_compile(policy))
    build_optimizer(model)
    return model


def train_refiner(samples: Samples, steps: int = STEPS, seed: int = 0, crop: int | None = None,
                  batch: int | None = None, policy: str = "float32", deadline: float | None = None):
    """A refiner trained on `samples` for `steps` batches of crops (binary cross-entropy on the soft mask), its
    convolutions computed as `policy` says (build_refiner). `deadline` (time.monotonic(), `train --budget`): the
    steps stop before a step that would end past it (the schedule's tail, where the rate is near 0, is what is
    lost); the model's `trained_steps` says how many ran."""
    import keras

    keras.utils.set_random_seed(seed)
    model = new_refiner(steps, policy)
    draw = crop_sampler(samples, crop or CROP, seed)
    started, losses = time.monotonic(), []
    for step in range(1, steps + 1):
        losses.append(float(model.train_on_batch(*draw(batch or BATCH))))
        now = time.monotonic()
        late = deadline is not None and step < steps and now + (now - started) / step > deadline
        if step % 250 == 0 or step == steps or late:
            say(f"  step {step}/{steps}: loss {np.mean(losses[-250:]):.4f} ({now - started:.0f} s)"
                + (": stopped here, the budget's end" if late else ""))
        if late:
            break
    model.trained_steps = step
    return model


def oof_count(path: Path) -> int:
    """Photos in an oof.npz, without reading its probabilities (a damaged file: one line, as load_oof says it)."""
    return len(load_oof(path, ids_only=True)[0])


def recipe() -> dict:
    """The constants a refiner is built and trained with, recorded beside it: changing one retrains it."""
    return {"channels": CHANNELS, "dilations": list(DILATIONS), "crop": CROP, "batch": BATCH, "lr": LR,
            "warmup": WARMUP, "along_outline": ALONG_OUTLINE}


def _finished_folds(run_dir: Path, own: bool, test_only: bool) -> list[int]:
    """The folds a refiner can learn from (finished: model.keras alone may be mid-training), or a one-line error
    when there are too few."""
    folds = [k for k in trained_folds(run_dir) if is_finished(fold_dir(run_dir, k))
             and (own or (fold_dir(run_dir, k) / "oof.npz").is_file())]
    for k in folds:  # a finished fold retrained (--force) is being written again
        check_free(fold_lock(run_dir, k), "the refiner would learn from it half-written; wait for the training to end")
    need = 1 if test_only or own else 2
    if len(folds) < need:
        hint = "; `refiner --test-only` trains the test set's refiner alone from one" if folds else ""
        why = ("" if own else " (a fold's refiner learns from the held-out photos of the other folds)")
        raise UserError(f"{run_dir}: the refiner needs at least {need} trained fold{'s' if need > 1 else ''}{why}; "
                        f"found {len(folds)}{hint}")
    return folds


def train_refiners(run_dir: Path, data: str | None, steps: int | None = None, test_only: bool = False,
                   refiner_from: str | None = None, deadline: float | None = None,
                   replan: Callable[[int], int] | None = None) -> list[Path]:
    """`refiner`: fold<k>.keras for each trained fold (from the others' held-out photos) and all.keras; a refiner
    whose record matches (same sources, steps and recipe) is kept, so an interrupted run resumes where it stopped.
    test_only: all.keras alone, what predict needs (a predict kernel trains it from the folds it gathered); it
    learns from every fold's held-out photos, so one trained fold is enough. refiner_from "training": each
    finished fold's refiner from its own model on its own training photos instead, all.keras a copy of the first
    fold's (module docstring). steps and refiner_from None: the run's config's (refiner_steps, refiner_from).
    A mixed-precision run trains its refiners in bfloat16 on a CPU that has it (`refiner_policy`, recorded as
    "policy"). Photos are decoded only for the refiners that must be trained. deadline (`train --budget`): each
    refiner stops before a step that would end past it, and is recorded as up to date all the same; replan(n): the
    steps of each of the n refiners still to train, asked once, as the first of them starts (its photos ready)."""
    cfg = load_config(run_dir / "config.json")
    refiner_from = cfg.refiner_from if refiner_from is None else refiner_from
    steps = cfg.refiner_steps if steps is None else steps
    if refiner_from not in REFINER_FROM_FILE:
        raise UserError(f"--refiner-from {refiner_from}: choose one of {', '.join(REFINER_FROM_FILE)}")
    if steps < 1:
        raise UserError(f"--refiner-steps {steps}: the refiner needs at least 1 training batch")
    own = refiner_from == "training"
    policy = refiner_policy(cfg.mixed_precision)
    folds = _finished_folds(run_dir, own, test_only)
    record_path = run_dir / REFINER_DIR / REFINER_RECORD
    record = read_refiner_record(run_dir, "delete it: the same `refiner` command then trains every refiner again")
    if own:
        counts = {k: len(training_ids(run_dir, cfg, k)) for k in folds}
    else:
        counts = {k: oof_count(run_dir / f"fold{k}" / "oof.npz") for k in folds}
    digests = refiner_sources(run_dir, folds, refiner_from)  # each file hashed once, not once per refiner that uses it
    todo, targets = [], [None] if test_only else [*folds, None]
    current: dict[tuple[int, ...], Path] = {}  # sources -> a refiner learnt from them (all.keras copies it in own)
    for target in targets:
        # own: fold k's from fold k alone, all.keras from the first fold's (a copy of its refiner: one fold's
        # photos in memory at a time); held-out: from every other fold
        sources = ([target if target is not None else folds[0]] if own else [k for k in folds if k != target])
        path = refiner_path(run_dir, target)
        entry = {"sources": {f"fold{k}": digests[f"fold{k}"] for k in sources}, "steps": steps,
                 "photos": sum(counts[k] for k in sources), "recipe": recipe()}
        if own:  # only then: refiners recorded before this key existed stay up to date
            entry[RECORD_REFINER_FROM] = refiner_from
        if policy != "float32":  # likewise
            entry["policy"] = policy
        kept = {k: v for k, v in (record.get(path.name) or {}).items() if k != REFINER_STOPPED_AT}
        if path.is_file() and kept == entry and zip_intact(path):  # a damaged one: trained again
            say(f"refiner: {path} is up to date")
            current[tuple(sources)] = path
        else:
            todo.append((path, sources, entry))
    ds = open_dataset(data) if todo else None
    if todo and not own:  # held-out: each photo once, shared by the refiners that learn from its fold
        geometry = Geometry(cfg.height, cfg.width, cfg.fit)
        needed = sorted({k for _, sources, _ in todo for k in sources})
        say(f"refiner: reading the held-out photos of folds {needed}")
        samples = {k: fold_samples(run_dir, k, ds, geometry) for k in needed}
    for i, (path, sources, entry) in enumerate(todo):
        same = current.get(tuple(sources))
        if same is not None:  # one fold's training photos: all.keras would learn exactly what fold<k>.keras did
            say(f"refiner: {path.name} learns from the same photos as {same.name}: copied")
            copy_file(same, path)
        else:
            say(f"refiner: training {path.name} on the {'training' if own else 'held-out'} photos of folds "
                f"{sources} ({entry['photos']} photos{', in bfloat16' if policy == 'mixed_bfloat16' else ''})")
            if own:  # each fold's training photos read when its refiner trains, then let go
                say(f"refiner: predicting fold {sources[0]}'s training photos with its model")
                learn = training_samples(run_dir, sources[0], ds, cfg)
            else:
                learn = joined([samples[k] for k in sources])
            if replan is not None:  # each refiner still to train once (a copy costs nothing)
                steps, replan = replan(len({tuple(s) for _, s, _ in todo[i:]} - set(current))), None
            model = train_refiner(learn, steps, policy=policy, deadline=deadline)
            save_model(model, path)
            del learn
            current[tuple(sources)] = path
            if model.trained_steps < steps:  # cut by the budget: up to date for it all the same
                entry = {**entry, REFINER_STOPPED_AT: model.trained_steps}
        record[path.name] = {**entry, "steps": steps}  # the steps planned again at the start, where they were
        write_json(record_path, record)
    say(f"refiner: {len(targets)} refiner(s) in {run_dir / REFINER_DIR}; score with `--refine net`")
    return [refiner_path(run_dir, target) for target in targets]

