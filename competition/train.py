"""Training one fold: folds.csv, cache, model, callbacks, resumable state, best model, OOF, curves.

Everything a fold writes lives in `runs/<name>/fold<k>/`: config.json, model.keras (best by the
monitored value), history.csv, curves.png, oof.npz (held-out probabilities), train.json (summary,
written last: a fold with train.json is complete). `backup/` holds the last epoch's model with its
optimizer state and `state.json`; rerunning the same command resumes from there.
"""
from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import time
from pathlib import Path


from .config import TrainConfig, save_config
from .data.folds import check_fold
from .data.layout import open_dataset
from .data.pipeline import build_cache, make_dataset, streaming
from .errors import UserError
from .fileio import atomic_open, read_json, remove_temps, write_json, write_text
from .geometry import Geometry
from .models.saving import save_model
from .progress import say
from .runs import check_run_config, fold_dir, load_or_make_folds, save_oof, split_ids
from .runtime import dtype_policy, jit_compile, machine_policy, pick_strategy, xla_setting

def _new_model(cfg: TrainConfig):
    from .models import build_model
    model = build_model(cfg, (None, None) if cfg.crop else None)  # crops to train, whole frames to validate
    return compile_model(model, cfg, lr_at(cfg, 0))


def compile_model(model, cfg: TrainConfig, lr: float, jit: bool | str | None = None):
    """Adam, the run's loss and metrics, and XLA as `jit_compile()` decides (or `jit`: bench compares both)."""
    import keras

    from .losses import make_loss, make_metrics
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=cfg.epsilon, clipnorm=cfg.clipnorm or None),
                  loss=make_loss(cfg.loss, cfg.bce_weight), metrics=make_metrics(cfg.threshold),
                  jit_compile=jit_compile(model.dtype_policy.name) if jit is None else jit)
    return model


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based) under the run's schedule: a pure function of the epoch,
    so a resumed run sets exactly the rate the uninterrupted one had.

    Warm-up rises linearly from lr/10 over `warmup` epochs; "cosine" then falls from lr to lr/100 at the
    last epoch. "constant" stays at lr (ReduceLROnPlateau, if set, lowers it from there)."""
    if epoch < cfg.warmup:
        return cfg.lr * (0.1 + 0.9 * epoch / cfg.warmup)
    if cfg.schedule == "cosine":
        span = max(1, cfg.epochs - 1 - cfg.warmup)
        t = min(1.0, (epoch - cfg.warmup) / span)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
    return cfg.lr

def _unfreeze(model, cfg: TrainConfig, state: dict) -> dict:
    """End of --freeze-encoder: the backbone trainable, a fresh Adam at lr * FINETUNE_LR_FACTOR, and the state
    the fine-tuning starts from (patience and the LR schedule start again; the best so far is kept). Nothing is
    written here: the first fine-tuning epoch saves the unfrozen model with this state, so a run killed before
    then unfreezes again when resumed."""
    from .models.encoders import FINETUNE_LR_FACTOR, set_encoder_trainable
    set_encoder_trainable(model, True)
    compile_model(model, cfg, cfg.lr * FINETUNE_LR_FACTOR)
    state = {k: v for k, v in state.items() if k != "reduce_lr"}
    say(f"epoch {state.get('epoch', 0)}: encoder unfrozen, learning rate {cfg.lr * FINETUNE_LR_FACTOR:g} "
        f"(lr x {FINETUNE_LR_FACTOR:g})")
    return {**state, "phase": "finetune", "wait": 0, "stopped": False}


def _better(mode: str, value: float, best: float | None) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _make_callbacks(cfg: TrainConfig, out: Path, state: dict):
    """Our recorder (atomic checkpoints, history, resumable state) + Keras's stock callbacks."""
    import keras

    mode = "min" if cfg.monitor.endswith("loss") else "max"

    class Recorder(keras.callbacks.Callback):
        """At each epoch end: best model.keras, history.csv, backup model + state.json, all atomic."""

        def __init__(self):
            super().__init__()
            self.nan_epoch = None
            self.history = list(state.get("history", []))
            self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
            self.started = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if any(isinstance(v, float) and not math.isfinite(v) for v in logs.values()):
                self.nan_epoch = epoch + 1
                self.model.stop_training = True
                return
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                   "seconds": round(time.monotonic() - self.started, 2)}
            self.history.append(row)
            value = logs.get(cfg.monitor)
            if _better(mode, value, self.best):
                self.best, self.best_epoch = float(value), epoch + 1
                save_model(self.model, out / "model.keras")
            write_text(out / "history.csv", history_csv(self.history))
            backup = out / "backup" / f"epoch{epoch + 1:03d}.keras"
            save_model(self.model, backup)
            write_json(out / "backup" / "state.json", {
                "epoch": epoch + 1, "backup": backup.name, "best": self.best, "best_epoch": self.best_epoch,
                "wait": getattr(early, "wait", 0), "stopped": bool(early.stopped_epoch), "history": self.history,
                **({"phase": state["phase"]} if "phase" in state else {})})  # --freeze-encoder: frozen | finetune
            for old in (out / "backup").glob("epoch*.keras"):
                if old != backup:
                    old.unlink(missing_ok=True)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping that continues its count (best value, epochs waited) after a resume."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if state.get("best") is not None:
                self.best, self.wait = state["best"], state.get("wait", 0)

    early = ResumableEarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.patience)
    recorder = Recorder()
    callbacks = [keras.callbacks.TerminateOnNaN(), early, recorder]
    if cfg.warmup or cfg.schedule != "constant":
        scale = 1.0
        if state.get("phase") == "finetune":  # after --freeze-encoder: the schedule at a tenth
            from .models.encoders import FINETUNE_LR_FACTOR
            scale = FINETUNE_LR_FACTOR

        def schedule(epoch: int, lr: float) -> float:  # after a constant schedule's warm-up: leave it to the plateau
            return scale * lr_at(cfg, epoch) if cfg.schedule != "constant" or epoch <= cfg.warmup else lr
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    if cfg.reduce_lr_patience and cfg.schedule == "constant":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, mode=mode, factor=0.5,
                                                           patience=cfg.reduce_lr_patience, min_lr=1e-6))
    return callbacks, recorder


def _guard_callback(cfg: TrainConfig, out: Path, run_dir: Path, recorder, deadline, mirror: Path | None,
                    state: dict, callbacks: list):
    """Last callback of each epoch: the LR schedule's state saved for a resume (and restored at the start),
    curves.png, the fold mirrored (`--mirror`), and the `--time-limit` check."""
    import keras

    from .mirror import mirror_fold
    plateau = next((c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)

    class Guard(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stopped_after = None  # the epoch after which the time limit stopped training
            self.started = time.monotonic()

        def on_train_begin(self, logs=None):
            saved = state.get("reduce_lr")
            if plateau is not None and saved:  # after ReduceLROnPlateau's own reset: continue its counts
                plateau.wait, plateau.best, plateau.cooldown_counter = saved["wait"], saved["best"], saved["cooldown"]
                self.model.optimizer.learning_rate = saved["lr"]  # a reduction made after the backup was saved

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            if recorder.nan_epoch is not None:
                return
            seconds = time.monotonic() - self.started
            state_path = out / "backup" / "state.json"
            if plateau is not None and state_path.is_file():
                lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                write_json(state_path, {**read_json(state_path), "reduce_lr": {
                    "wait": int(plateau.wait), "best": float(plateau.best), "cooldown": int(plateau.cooldown_counter),
                    "lr": lr}})
            if mirror is not None:
                plot_curves(recorder.history, out / "curves.png", f"{run_dir.name} fold {out.name[4:]}")
                mirror_fold(out, mirror / out.name)
            if (deadline is not None and deadline.step_done(seconds) and epoch + 1 < cfg.epochs
                    and not self.model.stop_training):
                self.stopped_after = epoch + 1
                self.model.stop_training = True

    return Guard()


def history_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """curves.png: loss and dice per epoch, training and validation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key in zip(axes, ("loss", "dice")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [r.get(prefix + key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=prefix + key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def train(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int, cache_dir: Path | None,
          force: bool = False, time_limit=None, mirror: Path | None = None, hold: bool = False) -> dict:
    """Train (or resume) one fold; returns the summary written to train.json.

    time_limit: a `timelimit.Deadline`: stop after the epoch whose successor would cross it (the fold is then
    marked "time_limited" and the same command resumes it). mirror: a folder that gets the run's files after
    every epoch (a kernel's /kaggle/working). hold: with no cache_dir, keep the files' bytes in memory once read
    (`--cache memory`)."""
    xla_setting()  # a mistyped COMPETITION_XLA stops here, not after the data is read and cached
    ds = open_dataset(data)
    out = fold_dir(run_dir, fold)
    check_fold(fold, cfg.k)
    if force and out.exists():
        shutil.rmtree(out)
    if (out / "train.json").is_file():
        summary = read_json(out / "train.json")
        say(f"{out} is already trained (best {cfg.monitor} {summary.get('best')}); --force retrains it")
        return summary
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_config(run_dir, cfg)
    if (out / "config.json").is_file():
        check_run_config(out, cfg)
    folds = load_or_make_folds(run_dir, ds, cfg)
    train_ids, val_ids = split_ids(folds, cfg, fold)
    ids = train_ids + val_ids
    if not train_ids or not val_ids:
        raise UserError(f"fold {fold} leaves {len(train_ids)} training and {len(val_ids)} validation images")
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.json", cfg)

    import keras
    import tensorflow as tf
    strategy = pick_strategy()
    policy = machine_policy(cfg.mixed_precision)
    if cfg.mixed_precision and policy == "float32":
        say("note: --mixed-precision ignored: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)")
    elif policy == "mixed_bfloat16":
        say("mixed precision: bfloat16 on this CPU (AVX512-BF16/AMX), without XLA")
    geom = Geometry(cfg.height, cfg.width, cfg.fit)
    if cache_dir is None:
        cache = streaming(ds, sorted(ids), geom, cfg.image_interp, hold)
    else:
        cache = build_cache(ds, sorted(ids), geom, cfg.image_interp, cache_dir)
    replicas = strategy.num_replicas_in_sync
    batch = cfg.batch * replicas
    state_path = out / "backup" / "state.json"
    state = read_json(state_path) if state_path.is_file() else {}
    remove_temps(out)  # left by a run killed mid-write; nothing refers to them
    keras.utils.set_random_seed(cfg.seed)
    train_ds = make_dataset(cache, train_ids, batch, True, cfg.augment, cfg.rotate, cfg.contrast, cfg.seed,
                            first_epoch=int(state.get("epoch", 0)), crop=cfg.crop)
    val_ds = make_dataset(cache, val_ids, cfg.eval_batch * replicas, False)  # whole frames
    from . import losses  # noqa: F401  registers our loss and metrics for load_model
    from .models.saving import load_model
    with dtype_policy(policy), strategy.scope():
        if state:
            model = load_model(out / "backup" / state["backup"])  # saved by this Keras or another (Kaggle's)
            say(f"resuming {out} after epoch {state['epoch']} of {cfg.epochs}"
                + (" (early stopping had fired: finishing)" if state.get("stopped") else ""))
        else:
            model = _new_model(cfg)
            if cfg.encoder and cfg.freeze_encoder:
                state["phase"] = "frozen"  # built frozen (models.build_model); saved in the backup's config
    initial_epoch = int(state.get("epoch", 0))
    model_name = f"{cfg.arch} on {cfg.encoder}" if cfg.encoder else cfg.arch
    say(f"training {run_dir.name} fold {fold}: {len(train_ids)} images, validating on {len(val_ids)} "
        f"(cars never shared), {model_name} {cfg.height}x{cfg.width}"
        + (f" in random {cfg.crop[0]}x{cfg.crop[1]} crops" if cfg.crop else "")
        + f", batch {batch} on {replicas} device(s)")
    if mirror is not None:
        from .mirror import mirror_fold, mirror_run_files
        mirror_run_files(run_dir, mirror)
        mirror_fold(out, mirror / out.name)
    from . import progress
    verbose = 0 if progress.QUIET else (1 if sys.stdout.isatty() else 2)
    while True:  # one pass, or two with --freeze-encoder: the decoder alone, then everything
        end = min(cfg.freeze_encoder, cfg.epochs) if state.get("phase") == "frozen" else cfg.epochs
        callbacks, recorder = _make_callbacks(cfg, out, state)
        guard = _guard_callback(cfg, out, run_dir, recorder, time_limit, mirror, state, callbacks)
        callbacks.append(guard)  # last: after the recorder's backup and the LR schedule's step
        if initial_epoch < end and not state.get("stopped"):
            try:
                model.fit(train_ds, validation_data=val_ds, epochs=end, initial_epoch=initial_epoch, shuffle=False,
                          callbacks=callbacks, verbose=verbose)
            except tf.errors.ResourceExhaustedError as e:
                raise UserError(f"out of GPU memory training {cfg.height}x{cfg.width} with batch {cfg.batch} per "
                                f"GPU: try --batch {max(1, cfg.batch // 2)} or a smaller --size") from e
        if recorder.nan_epoch is not None:
            kept = (f"model.keras holds the last good best (epoch {recorder.best_epoch})" if recorder.best_epoch
                    else "no checkpoint was good enough to keep")
            raise UserError(f"training of {out} stopped: the loss became NaN in epoch {recorder.nan_epoch}; {kept}; "
                            f"try a lower --lr (now {cfg.lr})")
        if guard.stopped_after is not None:
            return _stop_for_time(out, guard.stopped_after, cfg, time_limit, mirror)
        if end >= cfg.epochs:
            break
        state = read_json(state_path) if state_path.is_file() else state  # what the frozen epochs left
        with strategy.scope():
            state = _unfreeze(model, cfg, state)
        initial_epoch = int(state.get("epoch", 0))
        train_ds = make_dataset(cache, train_ids, batch, True, cfg.augment, cfg.rotate, cfg.contrast, cfg.seed,
                                first_epoch=initial_epoch, crop=cfg.crop)
    summary = _finish(cfg, out, recorder.history or state.get("history", []), cache, val_ids,
                      cfg.eval_batch * replicas, run_dir, fold)
    if mirror is not None:
        from .mirror import mirror_finished_fold
        mirror_finished_fold(out, mirror / out.name)
    return summary


def _stop_for_time(out: Path, epoch: int, cfg: TrainConfig, deadline, mirror: Path | None) -> dict:
    """Mark the fold time-limited in its backup state (not complete: the same command resumes it)."""
    from .timelimit import describe
    state_path = out / "backup" / "state.json"
    write_json(state_path, {**read_json(state_path), "time_limited": True})
    if mirror is not None:
        from .mirror import copy_file
        copy_file(state_path, mirror / out.name / "backup" / "state.json")
    say(f"stopped {out} after epoch {epoch} of {cfg.epochs}: another epoch (up to {describe(max(deadline.steps))}) "
        f"would pass the time limit of {describe(deadline.limit)}; run the same command again to resume")
    return {"fold": int(out.name[4:]), "epochs": epoch, "time_limited": True}


def _finish(cfg: TrainConfig, out: Path, history: list[dict], cache, val_ids: list[str], batch: int,
            run_dir: Path, fold: int) -> dict:
    """Best model -> OOF probabilities, curves, train.json; the backup is no longer needed."""
    import keras
    if not (out / "model.keras").is_file():
        raise UserError(f"{out}: no epoch improved {cfg.monitor}, so there is no model.keras; train longer")
    model = keras.models.load_model(out / "model.keras", compile=False)
    probs = model.predict(make_dataset(cache, val_ids, batch, False).map(lambda x, y: x), verbose=0)
    save_oof(out / "oof.npz", val_ids, probs)
    plot_curves(history, out / "curves.png", f"{run_dir.name} fold {fold}")
    sign = 1 if cfg.monitor.endswith("loss") else -1
    best = min(history, key=lambda r: sign * r.get(cfg.monitor, sign * math.inf)) if history else {}
    summary = {"fold": fold, "epochs": len(history), "best_epoch": best.get("epoch"),
               "best": best.get(cfg.monitor), "val_dice": best.get("val_dice"), "val_images": len(val_ids)}
    write_json(out / "train.json", summary)
    shutil.rmtree(out / "backup", ignore_errors=True)
    say(f"fold {fold} done: best val_dice {summary['val_dice']:.4f} at epoch {summary['best_epoch']} "
        f"(model resolution); {out}/model.keras")
    if cfg.refine == "net":  # score and predict will ask for the refiner: say so now
        when = "now" if cfg.refiner_from == "training" else "once two or more folds are trained"
        say(f"this run refines with the refiner net: train it {when} with `python -m competition refiner --run "
            f"{run_dir} --data DIR` (learns from {cfg.refiner_from} photos, {cfg.refiner_steps} steps)")
    return summary
