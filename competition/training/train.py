"""Training one fold: folds.csv, cache, model, callbacks, resumable state, best model, OOF, curves.

Everything a fold writes lives in `runs/<name>/fold<k>/`: config.json, model.keras (best by the
monitored value), history.csv, curves.png, oof.npz (held-out probabilities), train.json (summary,
written last: a fold with train.json is complete). `backup/` holds the last epoch's model with its
optimizer state and `state.json`; rerunning the same command resumes from there.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..base import console
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import check_folder, check_keras, remove_temps
from ..base.geometry import Geometry
from ..base.timelimit import format_duration
from ..config import TrainConfig, save_config
from ..inference.upsample import guide_reduction
from ..data.folds import check_fold, write_folds
from ..data.layout import open_dataset
from ..data.pipeline import build_cache, make_dataset, streaming
from ..models import build_model
from ..models.encoders import FINETUNE_LR_FACTOR, fetch_imagenet, set_encoder_trainable
from ..models.runtime import (build_optimizer, device_name, dtype_policy, jit_compile, machine_policy, pick_strategy,
                              read_xla_cache, xla_setting)
from ..models.saving import load_model
from ..runs.folder import (check_compatible, check_run_config, fold_dir, run_folds_or_new, save_oof, split_ids,
                           train_command)
from ..runs.history import plot_curves
from ..runs.lock import check_free, fold_lock, held, run_lock
from ..runs.mirror import mirror_finished_fold, mirror_fold, mirror_run_files
from ..runs.resume import (backup_model, finish, is_finished, mark_time_limited, read_plan, read_state, read_summary,
                           write_plan)
from .budget import (Budget, Rates, TooShort, cached_rates, checked_plan, cheaper, describe, fold_work, measure,
                     plan_for, training_end)
from .refiner import prepare_photo, refiner_policy


def new_model(cfg: TrainConfig, jit: bool | str | None = None):
    model = build_model(cfg, (None, None) if cfg.crop else None)  # crops to train, whole frames to validate
    return compile_model(model, cfg, lr_at(cfg, 0), jit)


def xla_key(cfg: TrainConfig) -> str:
    """What XLA's speed depends on: the model, its training input size and batch (`runtime.xla_choice`'s key)."""
    return (f"{cfg.arch}{'/' + cfg.encoder if cfg.encoder else ''} depth {cfg.depth} filters {cfg.filters} "
            f"bn {cfg.batchnorm} {cfg.pooling} | {cfg.train_size[0]}x{cfg.train_size[1]} | batch {cfg.batch}")


def choose_xla(cfg: TrainConfig, policy: str, models: tuple | None = None) -> bool | str:
    """`jit_compile` for this run on this machine: on a CPU in float32, measured the first time this model,
    input size and batch train here (`runtime.xla_choice`), then read from its cache. `models`: the pair
    compiled without and with XLA to time (bench has them built already), else built here."""
    return jit_compile(policy, lambda: _time_xla(cfg, policy, models), xla_key(cfg))


def _time_xla(cfg: TrainConfig, policy: str, models: tuple | None = None, rounds: int = 3) -> tuple[float, float]:
    """Median seconds of a training step without and with XLA, alternating, after one untimed step each."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((cfg.batch, *cfg.train_size, 3), dtype=np.float32)
    y = (rng.random((cfg.batch, *cfg.train_size, 1)) > 0.5).astype(np.float32)
    built = models is None
    if built:
        with dtype_policy(policy):
            # as new_model builds it: a crop-trained net takes any multiple, the probe's crops among them
            models = tuple(compile_model(build_model(cfg, (None, None) if cfg.crop else None), cfg, cfg.lr, jit)
                           for jit in (False, True))
    times: list[list[float]] = [[], []]
    for r in range(rounds + 1):
        for m, t in zip(models, times):
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            if r:  # the first step traces (and compiles)
                t.append(time.perf_counter() - t0)
    if built:
        del models
        keras.backend.clear_session()
    return float(np.median(times[0])), float(np.median(times[1]))


def compile_model(model, cfg: TrainConfig, lr: float, jit: bool | str | None = None):
    """Adam, the run's loss and metrics, and XLA as `jit_compile()` decides (or `jit`: bench compares both)."""
    import keras

    from ..models.losses import make_loss, make_metrics
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=cfg.epsilon, clipnorm=cfg.clipnorm or None),
                  loss=make_loss(cfg.loss, cfg.bce_weight), metrics=make_metrics(cfg.threshold),
                  jit_compile=jit_compile(model.dtype_policy.name) if jit is None else jit)
    build_optimizer(model)  # one trace of the train step, not two
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

def _unfreeze(model, cfg: TrainConfig, state: dict, jit: bool | str | None = None) -> dict:
    """End of --freeze-encoder: the backbone trainable, a fresh Adam at lr * FINETUNE_LR_FACTOR, and the state
    the fine-tuning starts from (patience and the LR schedule start again; the best so far is kept). Nothing is
    written here: the first fine-tuning epoch saves the unfrozen model with this state, so a run killed before
    then unfreezes again when resumed."""
    set_encoder_trainable(model, True)
    compile_model(model, cfg, cfg.lr * FINETUNE_LR_FACTOR, jit)
    state = {k: v for k, v in state.items() if k != "reduce_lr"}
    say(f"epoch {state.get('epoch', 0)}: encoder unfrozen, learning rate {cfg.lr * FINETUNE_LR_FACTOR:g} "
        f"(lr x {FINETUNE_LR_FACTOR:g})")
    return {**state, "phase": "finetune", "wait": 0, "stopped": False}


def train(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int, cache_dir: Path | None,
          force: bool = False, time_limit=None, mirror: Path | None = None, hold: bool = False,
          budget: Budget | None = None) -> dict:
    """Train (or resume) one fold; returns the summary written to train.json (with "plan": a budgeted fold's).

    time_limit: a `timelimit.Deadline`: stop after the epoch whose successor would cross it (the fold is then
    marked "time_limited" and the same command resumes it). mirror: a folder that gets the run's files after
    every epoch (a kernel's /kaggle/working). hold: with no cache_dir, keep the files' bytes in memory once read
    (`--cache memory`). budget: plan the epochs (and the refiner's steps) to fit it (training/budget.py); a fold
    resumed keeps the plan it was given. Everything that can be checked is checked before anything is written: a
    command that stops on bad input, or a budget too short, leaves the run folder as it was."""
    xla_setting()  # a mistyped COMPETITION_XLA stops here, not after the data is read and cached
    read_xla_cache()  # and a damaged cache of measured choices
    check_fold(fold, cfg.k)
    for flag, folder in (("--run", run_dir), ("--cache", cache_dir), ("--mirror", mirror)):
        if folder is not None:
            check_folder(folder, flag)
    ds = open_dataset(data)
    out = fold_dir(run_dir, fold)
    check_free(fold_lock(run_dir, fold), "a second train of it would write over it; wait for it to end, or stop it")
    if not force and is_finished(out):
        return _already_trained(cfg, run_dir, out, fold)
    check_compatible(run_dir, cfg)
    if not force:
        check_compatible(out, cfg)
        _check_backup(run_dir, out, fold)
    folds, new_folds = run_folds_or_new(run_dir, ds, cfg)
    train_ids, val_ids = split_ids(folds, cfg, fold)
    if not train_ids or not val_ids:
        raise UserError(f"fold {fold} leaves {len(train_ids)} training and {len(val_ids)} validation images"
                        + (f" of the {cfg.max_images} --max-images picks: pass more, or a smaller --k"
                           if cfg.max_images else ": pass a smaller --k"))
    geom = Geometry(cfg.height, cfg.width, cfg.fit)
    ids = sorted(train_ids + val_ids)
    ds.check_train_photos(ids)  # a photo cut short or of another size: one line, before a bar starts
    cache = (streaming(ds, ids, geom, cfg.image_interp, hold) if cache_dir is None  # a corrupt JPEG or a damaged
             else build_cache(ds, ids, geom, cfg.image_interp, cache_dir))         # cache stops here, run untouched
    if cfg.encoder and cfg.encoder_weights == "imagenet":
        fetch_imagenet(cfg.encoder)  # a failed download stops here too, the run untouched
    plan = _plan(cfg, out, budget, len(train_ids), len(val_ids), force, lambda: prepare_photo(ds, train_ids[0], cfg))
    # checked: now the run folder is written, by this process alone
    with held(fold_lock(run_dir, fold), f"training fold {fold}"):
        if force and out.exists():
            shutil.rmtree(out)
        with held(run_lock(run_dir), "writing the run's config.json and folds.csv"):
            check_run_config(run_dir, cfg)
            if new_folds and not (run_dir / "folds.csv").is_file():  # another fold's train may have just made it
                write_folds(run_dir / "folds.csv", folds)
        out.mkdir(parents=True, exist_ok=True)
        save_config(out / "config.json", cfg)
        if plan is not None:
            write_plan(out, {k: v for k, v in plan.items() if k != "new"})
        return _fit(cfg, run_dir, out, cache, train_ids, val_ids, time_limit, mirror, plan, budget)


def _replanned(plan: dict, budget: Budget, fold, first: bool, fit_s: float, initial_epoch: int,
               counts: tuple[int, int, int], out: Path) -> dict:
    """A budgeted fold's plan after a fit that stopped to be checked (its first epoch, or the guard's stop): made
    again from the fit's epochs (their mean seconds), what the fit spent beyond them counted once more for the fit
    that goes on."""
    done = 1 if first else fold.replan_at
    timed = fold.epoch_s if fold.history else None
    restart = 0.0 if timed is None else max(0.0, fit_s - timed * (done - initial_epoch))
    return checked_plan(plan, budget, timed, done, not first, *counts, out, restart)


def measured_rates(cfg: TrainConfig, refiner: bool, prepare: Callable[[], object] | None) -> Rates:
    """This machine's step times for `cfg` (training/budget.py's Rates): a training batch, a whole frame, the
    refiner's batch (`refiner`: the fold trains one) and `prepare()`, one photo's preparation for the refiner;
    measured the first time, a few steps each, then read from their cache (per machine, precision, XLA and
    shape)."""
    strategy, policy = pick_strategy(), machine_policy(cfg.mixed_precision)
    replicas = strategy.num_replicas_in_sync
    jit = choose_xla(cfg, policy) if replicas == 1 else None
    refiner_dtype = refiner_policy(cfg.mixed_precision) if refiner else None

    def build():
        with dtype_policy(policy), strategy.scope():
            return new_model(cfg, jit)
    key = (f"{device_name()} | {policy} | xla {jit} | {xla_key(cfg)} x {replicas} | eval {cfg.height}x{cfg.width}"
           f" x {cfg.eval_batch * replicas} | refiner {refiner_dtype} on drawn crops, with its photos' preparation")
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    guide = tuple(math.ceil(side / guide_reduction(geometry)) for side in geometry.native)
    return cached_rates(key, lambda: measure(build, cfg.train_size, cfg.batch * replicas, (cfg.height, cfg.width),
                                             cfg.eval_batch * replicas, refiner_dtype, prepare if refiner else None,
                                             guide))


def _plan(cfg: TrainConfig, out: Path, budget: Budget | None, n_train: int, n_val: int, force: bool,
          prepare: Callable[[], object]) -> dict | None:
    """A budgeted fold's plan: kept from its budget.json (a resume), else made now from this machine's measured
    rates; None when the fold is not budgeted. Says it in one line. A budget too short: one line, nothing written."""
    kept = None if force else read_plan(out)
    if budget is None:
        if kept is not None:
            say(f"{out}: resuming with its budget plan ({kept['epochs']} epochs, {kept['refiner_steps']} refiner "
                f"steps; --budget gives a new one)")
        return kept
    work = fold_work(budget, n_train, n_val, cfg.batch * pick_strategy().num_replicas_in_sync)
    state = {} if force else read_state(out)
    try:
        plan, new = plan_for(budget, kept, int(state.get("epoch", 0)), cfg.epochs, cfg.refiner_steps, cfg.warmup,
                             work, lambda: measured_rates(cfg, bool(budget.refiners), prepare))
    except TooShort as e:
        given = format_duration(budget.seconds) if budget.seconds >= 1 else f"{budget.seconds:g}s"
        raise UserError(f"--budget {given} is too short for {cfg.preset}: it {e}; give "
                        f"--budget {format_duration(math.ceil(e.least_s / 60) * 60)} or more"
                        f"{cheaper(cfg)}") from None
    say(describe(plan, budget.started) if new else f"{out}: resuming with its budget plan: {describe(plan, budget.started)}")
    return {**plan, "new": new}


def _already_trained(cfg: TrainConfig, run_dir: Path, out: Path, fold: int) -> dict:
    """A finished fold's summary, once its train.json and model.keras read back (a damaged one is one line)."""
    retrain = f"retrain the fold with `{train_command(run_dir, fold)} --force`"
    summary = read_summary(out, retrain)
    check_keras(out / "model.keras", retrain)
    say(f"{out} is already trained (best {cfg.monitor} {summary.get('best')}); --force retrains it")
    return summary


def _check_backup(run_dir: Path, out: Path, fold: int) -> None:
    """A fold's resumable state (backup/state.json and the model it names), checked before a resume reads it."""
    retrain = f"retrain the fold with `{train_command(run_dir, fold)} --force`"
    state = read_state(out, retrain)
    if state:
        check_keras(backup_model(out, state), retrain)


def _say_policy(cfg: TrainConfig, policy: str) -> None:
    if cfg.mixed_precision and policy == "float32":
        say("note: --mixed-precision ignored: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)")
    elif policy == "mixed_bfloat16":
        say("mixed precision: bfloat16 on this CPU (AVX512-BF16/AMX), without XLA")


def _model(cfg: TrainConfig, out: Path, state: dict, strategy, policy: str, jit: bool | str | None = None):
    """The fold's model: the backup's (a resume) or a new one, built under the run's precision policy."""
    from ..models import losses  # noqa: F401  registers our loss and metrics for load_model
    with dtype_policy(policy), strategy.scope():
        if state:
            model = load_model(backup_model(out, state))  # saved by this Keras or another (Kaggle's)
            say(f"resuming {out} after epoch {state['epoch']} of {cfg.epochs}"
                + (" (early stopping had fired: finishing)" if state.get("stopped") else ""))
        else:
            model = new_model(cfg, jit)
            if cfg.encoder and cfg.freeze_encoder:
                state["phase"] = "frozen"  # built frozen (models.build_model); saved in the backup's config
    return model


def _schedule(cfg: TrainConfig, state: dict):
    """The LearningRateScheduler's function, or None when the run has neither warm-up nor a schedule."""
    if not (cfg.warmup or cfg.schedule != "constant"):
        return None
    scale = 1.0
    if state.get("phase") == "finetune":  # after --freeze-encoder: the schedule at a tenth
        scale = FINETUNE_LR_FACTOR

    def schedule(epoch: int, lr: float) -> float:  # after a constant schedule's warm-up: leave it to the plateau
        return scale * lr_at(cfg, epoch) if cfg.schedule != "constant" or epoch <= cfg.warmup else lr
    return schedule


def _fit(cfg: TrainConfig, run_dir: Path, out: Path, cache, train_ids: list[str], val_ids: list[str],
         time_limit, mirror: Path | None, plan: dict | None = None, budget: Budget | None = None) -> dict:
    """The fit itself, in one pass or two (--freeze-encoder: the decoder alone, then everything), resumable; a
    budgeted fold's first epoch alone first, after which it is planned again when its time says so."""
    import keras
    import tensorflow as tf

    from . import callbacks as fold_callbacks
    if plan is not None:  # the schedule over the planned epochs
        cfg = dataclasses.replace(cfg, epochs=plan["epochs"], warmup=plan["warmup"])
    strategy, policy = pick_strategy(), machine_policy(cfg.mixed_precision)
    _say_policy(cfg, policy)
    replicas = strategy.num_replicas_in_sync
    batch = cfg.batch * replicas
    state = read_state(out)
    remove_temps(out)  # left by a run killed mid-write; nothing refers to them
    jit = choose_xla(cfg, policy) if replicas == 1 else None  # before the seed: its probe draws numbers
    keras.utils.set_random_seed(cfg.seed)
    train_ds = make_dataset(cache, train_ids, batch, True, cfg.augment, cfg.rotate, cfg.contrast, cfg.seed,
                            first_epoch=int(state.get("epoch", 0)), crop=cfg.crop)
    val_ds = make_dataset(cache, val_ids, cfg.eval_batch * replicas, False)  # whole frames
    model = _model(cfg, out, state, strategy, policy, jit)
    initial_epoch = int(state.get("epoch", 0))
    model_name = f"{cfg.arch} on {cfg.encoder}" if cfg.encoder else cfg.arch
    say(f"training {run_dir.name} fold {out.name[4:]}: {len(train_ids)} images, validating on {len(val_ids)} "
        f"(cars never shared), {model_name} {cfg.height}x{cfg.width}"
        + (f" in random {cfg.crop[0]}x{cfg.crop[1]} crops" if cfg.crop else "")
        + f", batch {batch} on {replicas} device(s)")
    if mirror is not None:
        mirror_run_files(run_dir, mirror)
        mirror_fold(out, mirror / out.name)
    verbose = 0 if console.QUIET else (1 if sys.stdout.isatty() else 2)
    first = budget is not None and plan is not None and not plan.get("replanned") and initial_epoch == 0
    while True:  # one pass, or two with --freeze-encoder: the decoder alone, then everything
        end = min(cfg.freeze_encoder, cfg.epochs) if state.get("phase") == "frozen" else cfg.epochs
        end = min(end, 1) if first else end  # a budgeted fold's first epoch alone: its time checks the plan
        callbacks, fold = fold_callbacks.make_callbacks(
            fold_callbacks.FoldState(cfg, out, run_dir, state, time_limit, mirror, training_end(plan, budget)),
            _schedule(cfg, state))
        fit_started = time.monotonic()
        if initial_epoch < end and not state.get("stopped"):
            try:
                model.fit(train_ds, validation_data=val_ds, epochs=end, initial_epoch=initial_epoch, shuffle=False,
                          callbacks=callbacks, verbose=verbose)
            except tf.errors.ResourceExhaustedError as e:
                raise UserError(f"out of GPU memory training {cfg.height}x{cfg.width} with batch {cfg.batch} per "
                                f"GPU: try --batch {max(1, cfg.batch // 2)} or a smaller --size") from e
        if fold.nan_epoch is not None:
            kept = (f"model.keras holds the last good best (epoch {fold.best_epoch})" if fold.best_epoch
                    else "no checkpoint was good enough to keep")
            raise UserError(f"training of {out} stopped: the loss became NaN in epoch {fold.nan_epoch}; {kept}; "
                            f"try a lower --lr (now {cfg.lr})")
        if fold.stopped_after is not None:
            return _stop_for_time(out, fold.stopped_after, cfg, time_limit, mirror)
        if first or fold.replan_at is not None:  # planned again from the epochs' own time, then the rest
            plan = _replanned(plan, budget, fold, first, time.monotonic() - fit_started, initial_epoch,
                              (len(train_ids), len(val_ids), batch), out)
            first, cfg, state = False, dataclasses.replace(cfg, epochs=plan["epochs"]), read_state(out) or state
            done = int(state.get("epoch", 0))
            frozen_ends = state.get("phase") == "frozen" and done >= min(cfg.freeze_encoder, cfg.epochs)
            if done < cfg.epochs and not state.get("stopped") and not frozen_ends:
                initial_epoch = done
                train_ds = make_dataset(cache, train_ids, batch, True, cfg.augment, cfg.rotate, cfg.contrast,
                                        cfg.seed, first_epoch=initial_epoch, crop=cfg.crop)
                continue
        if end >= cfg.epochs:
            break
        state = read_state(out) or state  # what the frozen epochs left
        with strategy.scope():
            state = _unfreeze(model, cfg, state, jit)
        initial_epoch = int(state.get("epoch", 0))
        train_ds = make_dataset(cache, train_ids, batch, True, cfg.augment, cfg.rotate, cfg.contrast, cfg.seed,
                                first_epoch=initial_epoch, crop=cfg.crop)
    summary = _finish(cfg, out, fold.history or state.get("history", []), cache, val_ids,
                      cfg.eval_batch * replicas, run_dir, int(out.name[4:]))
    if mirror is not None:
        mirror_finished_fold(out, mirror / out.name)
    return summary


def _stop_for_time(out: Path, epoch: int, cfg: TrainConfig, deadline, mirror: Path | None) -> dict:
    """Mark the fold time-limited in its backup state (not complete: the same command resumes it)."""
    mark_time_limited(out, mirror)
    say(f"stopped {out} after epoch {epoch} of {cfg.epochs}: another epoch (up to {format_duration(max(deadline.steps))}) "
        f"would pass the time limit of {format_duration(deadline.limit)}; run the same command again to resume")
    return {"fold": int(out.name[4:]), "epochs": epoch, "time_limited": True}


def _finish(cfg: TrainConfig, out: Path, history: list[dict], cache, val_ids: list[str], batch: int,
            run_dir: Path, fold: int) -> dict:
    """Best model -> OOF probabilities, curves, train.json; the backup is no longer needed."""
    if not (out / "model.keras").is_file():
        raise UserError(f"{out}: no epoch improved {cfg.monitor}, so there is no model.keras; train longer")
    model = load_model(out / "model.keras", compile=False,
                       rebuild=f"train it again: train --run {run_dir} --fold {fold} --data DIR --force")
    probs = model.predict(make_dataset(cache, val_ids, batch, False).map(lambda x, y: x), verbose=0)
    save_oof(out / "oof.npz", val_ids, probs)
    plot_curves(history, out / "curves.png", f"{run_dir.name} fold {fold}")
    sign = 1 if cfg.monitor.endswith("loss") else -1
    best = min(history, key=lambda r: sign * r.get(cfg.monitor, sign * math.inf)) if history else {}
    summary = {"fold": fold, "epochs": len(history), "best_epoch": best.get("epoch"),
               "best": best.get(cfg.monitor), "val_dice": best.get("val_dice"), "val_images": len(val_ids)}
    finish(out, summary)
    say(f"fold {fold} done: best val_dice {summary['val_dice']:.4f} at epoch {summary['best_epoch']} "
        f"(model resolution); {out}/model.keras")
    return summary
