"""Cross-validation by car of toolkit presets on a machine without TensorFlow (a lent GPU with Keras on JAX).

A measurement script, not part of the package. What is the toolkit's: the folds (`load_or_make_folds`), the
image cache (`build_cache`), the model, loss, metrics and optimiser (`train.new_model`), the learning-rate
schedule (`train.lr_at`), early stopping and checkpointing on the preset's monitor, and the Kaggle-exact scorer
(`score.score_fold`, `score.cross_validate`: per image, native 1918x1280, hflip TTA). What is not: the input
loop. tf.data needs TensorFlow, so a numpy loader makes the same batches: pass n shuffled by (seed, n), and
flip / rotation / contrast with `pipeline.crop_augmentation`'s distributions (rotation by OpenCV: bilinear photo,
nearest mask, reflected border). Results are written as the CLI writes them (runs/<name>/cv.md, scores.csv).

    KERAS_BACKEND=jax python scripts/gpu_cv.py --data DIR --runs runs --preset cpu --folds 0,1,2,3,4
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# JAX takes 75% of the GPU per process by default: the scoring process beside the fold workers then ran out.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def augment(x: np.ndarray, y: np.ndarray, cfg, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float32 images (B, H, W, 3) in [0, 1] and masks (B, H, W, 1): the CLI's augmentations, in numpy."""
    x, y = x.copy(), y.copy()
    b, h, w = x.shape[:3]
    if "flip" in cfg.augment:
        flip = rng.random(b) < 0.5
        x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
    if "rotate" in cfg.augment and cfg.rotate > 0:
        limit = cfg.rotate * 360.0
        for i, angle in enumerate(rng.uniform(-limit, limit, b)):
            m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(angle), 1.0)
            x[i] = cv2.warpAffine(x[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            y[i, ..., 0] = cv2.warpAffine(y[i, ..., 0], m, (w, h), flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_REFLECT)
    if "contrast" in cfg.augment and cfg.contrast > 0:
        factor = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (b, 1, 1, 1)).astype(np.float32)
        mean = x.mean(axis=(1, 2), keepdims=True)
        x = np.clip((x - mean) * factor + mean, 0.0, 1.0)
    return x, y


def train_fold(cfg, data: str, run_dir: Path, fold: int, cache_root: Path) -> dict:
    import keras

    from competition.config import save_config
    from competition.data.layout import open_dataset
    from competition.data.pipeline import build_cache
    from competition.base.fileio import write_json
    from competition.base.geometry import Geometry
    from competition.runs.folder import fold_dir, load_or_make_folds, select_ids
    from competition.training.train import lr_at, new_model

    ds = open_dataset(data)
    folds = load_or_make_folds(run_dir, ds, cfg)
    ids = select_ids(sorted(folds), cfg.max_images, cfg.seed)
    train_ids = [i for i in ids if folds[i] != fold]
    val_ids = [i for i in ids if folds[i] == fold]
    out = fold_dir(run_dir, fold)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.json", cfg)
    cache = build_cache(ds, sorted(ids), Geometry(cfg.height, cfg.width, cfg.fit), cfg.image_interp, cache_root)
    xv, yv = cache.batch(cache.index(val_ids))
    xv, yv = xv.astype(np.float32) / 255.0, yv.astype(np.float32)
    index = cache.index(train_ids)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.random.default_rng([cfg.seed, 0]).permutation(index)

        def __len__(self):
            return math.ceil(len(index) / cfg.batch)

        def __getitem__(self, i):
            x, y = cache.batch(self.order[i * cfg.batch:(i + 1) * cfg.batch])
            rng = np.random.default_rng([cfg.seed, self.epoch, i, 1])
            return augment(x.astype(np.float32) / 255.0, y.astype(np.float32), cfg, rng)

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([cfg.seed, self.epoch]).permutation(index)

    keras.utils.set_random_seed(cfg.seed)
    model = new_model(cfg)
    mode = "min" if cfg.monitor.endswith("loss") else "max"
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.patience),
                 keras.callbacks.ModelCheckpoint(str(out / "model.keras"), monitor=cfg.monitor, mode=mode,
                                                 save_best_only=True),
                 keras.callbacks.CSVLogger(str(out / "history.csv"))]
    if cfg.warmup or cfg.schedule != "constant":
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda e, lr: lr_at(cfg, e) if cfg.schedule != "constant" or e <= cfg.warmup else lr))
    if cfg.reduce_lr_patience and cfg.schedule == "constant":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, mode=mode, factor=0.5,
                                                           patience=cfg.reduce_lr_patience, min_lr=1e-6))
    started = time.time()
    hist = model.fit(Batches(), validation_data=(xv, yv), batch_size=cfg.batch, epochs=cfg.epochs,
                     callbacks=callbacks, verbose=2)
    dice = hist.history.get("val_dice", [])
    summary = {"fold": fold, "epochs": len(dice), "best": max(dice) if dice else None,
               "best_epoch": int(np.argmax(dice)) + 1 if dice else None, "val_dice_by_epoch": dice,
               "lr_by_epoch": [float(v) for v in hist.history.get("learning_rate", [])],
               "seconds": round(time.time() - started, 1), "val_images": len(val_ids), "train_images": len(train_ids),
               "trainer": f"scripts/gpu_cv.py, keras {keras.__version__} on {keras.backend.backend()}"}
    write_json(out / "train.json", summary)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--name", default=None, help="run name (default: the preset's)")
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--cache", default="cache")
    p.add_argument("--set", default="{}", help="JSON overrides of the preset, e.g. '{\"epochs\": 30}'")
    p.add_argument("--fold-worker", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()

    from competition.config import preset, save_config
    from competition.data.layout import open_dataset
    from competition.data.pipeline import build_cache
    from competition.base.geometry import Geometry
    from competition.runs.folder import load_or_make_folds, select_ids
    cfg = preset(a.preset, **json.loads(a.set))
    run_dir = Path(a.runs) / (a.name or a.preset)
    if a.fold_worker is not None:
        train_fold(cfg, a.data, run_dir, a.fold_worker, Path(a.cache))
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir / "config.json", cfg)
    ds = open_dataset(a.data)
    folds = load_or_make_folds(run_dir, ds, cfg)  # once, before the fold workers read it
    build_cache(ds, sorted(select_ids(sorted(folds), cfg.max_images, cfg.seed)),
                Geometry(cfg.height, cfg.width, cfg.fit), cfg.image_interp, Path(a.cache))
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    workers = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--fold-worker", k], env=env,
                                stdout=open(run_dir / f"fold{k}.log", "w"), stderr=subprocess.STDOUT)
               for k in a.folds.split(",")]
    codes = [w.wait() for w in workers]
    if any(codes):
        print(f"fold workers exited {codes}; see {run_dir}/fold*.log", file=sys.stderr)
    from competition.scoring.score import cross_validate
    cross_validate(run_dir, a.data, "hflip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
