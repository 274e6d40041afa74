"""The callbacks of a fold's fit: the recorder (checkpoints, history, the resume state), early stopping that
continues its count after a resume, and the guard (plateau state, curves, --mirror, --time-limit). They share one
`FoldState`; what they save for a resume is written through resume.py. Imports Keras: train imports it lazily.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from ..base.fileio import write_text
from ..config import TrainConfig
from ..models.saving import save_model
from ..runs.history import history_csv, plot_curves
from ..runs.mirror import mirror_fold
from ..runs.resume import LOGS, backup_path, record_epoch, record_plateau


@dataclass
class FoldState:
    """One fold's fit as its callbacks see it: its config and folder, what the resume state said at the start,
    and what the epochs have found since."""

    cfg: TrainConfig
    out: Path
    run_dir: Path
    resumed: dict                 # backup/state.json as read at the start of this pass ({}: a fresh fold)
    deadline: object = None       # a timelimit.Deadline, or None
    mirror: Path | None = None
    budget_end: float | None = None  # a budgeted fold: the monotonic time its epochs must end by (budget.py)
    replan_at: int | None = None      # the epoch after which the guard stopped a budgeted fold to plan it again
    epoch_s: float | None = None  # this fit's epochs' mean seconds so far (saving and callbacks included)
    history: list[dict] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    nan_epoch: int | None = None      # the epoch whose loss became NaN
    stopped_after: int | None = None  # the epoch after which --time-limit stopped training

    def __post_init__(self) -> None:
        self.history = list(self.resumed.get("history", []))
        self.best, self.best_epoch = self.resumed.get("best"), self.resumed.get("best_epoch")

    @property
    def mode(self) -> str:
        return "min" if self.cfg.monitor.endswith("loss") else "max"

    def better(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return self.best is None or (value < self.best if self.mode == "min" else value > self.best)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues its count (best value, epochs waited) after a resume."""

    def __init__(self, fold: FoldState):
        super().__init__(monitor=fold.cfg.monitor, mode=fold.mode, patience=fold.cfg.patience)
        self.fold = fold

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.fold.resumed.get("best") is not None:
            self.best, self.wait = self.fold.resumed["best"], self.fold.resumed.get("wait", 0)


class Recorder(keras.callbacks.Callback):
    """At each epoch end: best model.keras, history.csv, backup model + state.json, all atomic."""

    def __init__(self, fold: FoldState, early: ResumableEarlyStopping):
        super().__init__()
        self.fold, self.early, self.started = fold, early, time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        fold, logs = self.fold, dict(logs or {})
        if any(isinstance(v, float) and not math.isfinite(v) for v in logs.values()):
            fold.nan_epoch = epoch + 1
            self.model.stop_training = True
            return
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        fold.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                             "seconds": round(time.monotonic() - self.started, 2)})
        value = logs.get(fold.cfg.monitor)
        if fold.better(value):
            fold.best, fold.best_epoch = float(value), epoch + 1
            save_model(self.model, fold.out / "model.keras")
        write_text(fold.out / "history.csv", history_csv(fold.history))
        save_model(self.model, backup_path(fold.out, epoch + 1))
        record_epoch(fold.out, epoch + 1, fold.best, fold.best_epoch, getattr(self.early, "wait", 0),
                     bool(self.early.stopped_epoch), fold.history, fold.resumed.get("phase"))


class Guard(keras.callbacks.Callback):
    """Last callback of each epoch: the LR plateau's state saved for a resume (and restored at the start),
    curves.png and the fold mirrored (`--mirror`), and the `--time-limit` check."""

    def __init__(self, fold: FoldState, plateau: keras.callbacks.ReduceLROnPlateau | None):
        super().__init__()
        self.fold, self.plateau, self.started, self.epochs = fold, plateau, time.monotonic(), []

    def on_train_begin(self, logs=None):
        saved = self.fold.resumed.get("reduce_lr")
        if self.plateau is not None and saved:  # after ReduceLROnPlateau's own reset: continue its counts
            p = self.plateau
            p.wait, p.best, p.cooldown_counter = saved["wait"], saved["best"], saved["cooldown"]
            self.model.optimizer.learning_rate = saved["lr"]  # a reduction made after the backup was saved

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        fold = self.fold
        if fold.nan_epoch is not None:
            return
        seconds = time.monotonic() - self.started
        if self.plateau is not None:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            record_plateau(fold.out, int(self.plateau.wait), float(self.plateau.best),
                           int(self.plateau.cooldown_counter), lr)
        if fold.mirror is not None:
            plot_curves(fold.history, fold.out / "curves.png", f"{fold.run_dir.name} fold {fold.out.name[4:]}")
            mirror_fold(fold.out, fold.mirror / fold.out.name)
        if (fold.deadline is not None and fold.deadline.step_done(seconds) and epoch + 1 < fold.cfg.epochs
                and not self.model.stop_training):
            fold.stopped_after = epoch + 1
            self.model.stop_training = True
        self.epochs.append(seconds)
        left = fold.cfg.epochs - (epoch + 1)
        mean = fold.epoch_s = sum(self.epochs) / len(self.epochs)
        if fold.budget_end is not None and left > 0 and time.monotonic() + left * mean > fold.budget_end:
            # the budget's guard: the planned epochs would overrun: stopped here to be planned again (budget.py)
            fold.replan_at = epoch + 1
            self.model.stop_training = True


class Curves(keras.callbacks.Callback):
    """Live training curves: each epoch's recorded values (losses, dice, learning rate, seconds) as TensorBoard
    scalars in an event file of fold<k>/logs (runs.resume.LOGS), step = the epoch; a resumed fold adds a file that
    goes on where it stopped. Written with TensorFlow's own event and summary records (tf.summary needs the
    tensorboard package, which only `make tensorboard` installs). `make tensorboard RUN=...` shows them."""

    def __init__(self, fold: FoldState):
        super().__init__()
        self.fold, self.writer = fold, None

    def on_epoch_end(self, epoch, logs=None):
        if not self.fold.history or self.fold.history[-1]["epoch"] != epoch + 1 or keras.backend.backend() != \
                "tensorflow":
            return
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import Summary
        from tensorflow.core.util.event_pb2 import Event
        if self.writer is None:
            (self.fold.out / LOGS).mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{os.getpid()}.competition"
            self.writer = tf.io.TFRecordWriter(str(self.fold.out / LOGS / name))
            self.writer.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in self.fold.history[-1].items() if k != "epoch"]
        self.writer.write(Event(wall_time=time.time(), step=epoch + 1,
                                summary=Summary(value=values)).SerializeToString())
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def make_callbacks(fold: FoldState, schedule) -> tuple[list, FoldState]:
    """TerminateOnNaN, early stopping, the recorder and the curves, the LR schedule (`schedule(epoch, lr)`, None:
    none) or plateau, then the guard (last: after the recorder's backup and the schedule's step); and the shared
    state."""
    cfg = fold.cfg
    early = ResumableEarlyStopping(fold)
    callbacks = [keras.callbacks.TerminateOnNaN(), early, Recorder(fold, early), Curves(fold)]
    if schedule is not None:
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    plateau = None
    if cfg.reduce_lr_patience and cfg.schedule == "constant":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, mode=fold.mode, factor=0.5,
                                                    patience=cfg.reduce_lr_patience, min_lr=1e-6)
        callbacks.append(plateau)
    callbacks.append(Guard(fold, plateau))
    return callbacks, fold
