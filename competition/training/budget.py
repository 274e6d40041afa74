"""`train --budget DURATION`: the whole fold (the first-stage net and the refiner its preset asks for) planned to
end within a time budget on this machine, instead of a fixed number of epochs.

Before the first epoch the model's training step, a whole frame's prediction and (where the fold trains one) the
refiner's step are timed here, a few steps each, and kept per machine and shape (`rates_cache_path`, as the XLA
choice is). The plan is a pure function of those rates (`make_plan`): of the budget (less a MARGIN for what the
estimate misses, less what the command has spent already, less the fixed work after training: the out-of-fold pass
and the refiner's photos), the preset's ratio of epochs to refiner steps is kept and scaled to fill it, the epochs
rounded down and the rest given to the refiner. The learning-rate schedules are the preset's over the planned
length (warm-up, then the cosine to its end; the refiner's over its steps), so a short budget runs a complete
schedule. After the first epoch the plan is made once more from that epoch's own time when it is off by more than
REPLAN_TOLERANCE, and the refiner's steps once more as it starts, from the time then left (`refiner_steps_at`:
what the epochs' times left over goes to the refiner). The plan is kept in fold<k>/budget.json: a fold killed
and resumed keeps it.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..base import records
from ..base.errors import UserError
from ..base.fileio import write_json
from ..base.records import Shape
from ..base.console import say
from ..base.timelimit import format_duration
from ..config import OFFERED, TrainConfig, preset
from ..models.runtime import xla_cache_path
from ..runs.resume import write_plan

MARGIN = 0.95            # share of the budget the plan fills; the rest absorbs what the estimate misses
REPLAN_TOLERANCE = 0.10  # the first epoch's time off the plan's by more than this: planned again, once
MIN_REFINER_STEPS = 200  # fewer and the refiner is not worth its pass: a budget that cannot give it these is short
REFINER_SAVE_S = 3.0     # after the refiner's last step: it saved, all.keras copied, the record written
CURVES_S = 2.0           # curves.png drawn and train.json written after the epochs (matplotlib's import and a figure)


@dataclass(frozen=True)
class Rates:
    """Seconds on this machine: one training batch, one whole frame predicted (validation, out-of-fold, the
    refiner's photos), one refiner batch, one photo prepared for the refiner; the first (traced) batches' extra
    (training and prediction), the model saved and loaded again (the best one reloaded after training), the refiner's
    first batch's extra."""

    train_step_s: float
    eval_image_s: float
    refiner_step_s: float = 0.0
    decode_s: float = 0.0
    trace_s: float = 0.0
    reload_s: float = 0.0
    refiner_trace_s: float = 0.0
    source: str = "measured here"


@dataclass(frozen=True)
class Work:
    """What the fold's command does: its training and validation images, the global batch, the refiners it trains
    after the fold (0: none) and the photos they learn from (to decode, and to predict where they learn from the
    fold's own training photos)."""

    train_images: int
    val_images: int
    batch: int
    refiners: int = 0
    refiner_photos: int = 0
    predict_refiner_photos: bool = False


def epoch_seconds(work: Work, rates: Rates) -> float:
    """One epoch: its training batches and the validation frames."""
    return math.ceil(work.train_images / work.batch) * rates.train_step_s + work.val_images * rates.eval_image_s


def fixed_seconds(work: Work, rates: Rates) -> float:
    """What follows the epochs whatever their number: the best model reloaded, the out-of-fold pass (traced again),
    the curves; each refiner's start (the fold's model reloaded, the refiner's first batch traced) and their photos
    (read, decoded and, learning from the fold's own photos, predicted)."""
    per_photo = rates.decode_s + (rates.eval_image_s if work.predict_refiner_photos else 0.0)
    start = rates.reload_s + rates.refiner_trace_s
    refiners = work.refiner_photos * per_photo + start * work.refiners if work.refiners else 0.0
    after = rates.reload_s + rates.trace_s + CURVES_S
    return work.val_images * rates.eval_image_s + after + refiners


def make_plan(budget_s: float, spent_s: float, epochs: int, refiner_steps: int, warmup: int, work: Work,
              rates: Rates, done_epochs: int = 0, cap: bool = False) -> dict:
    """The epochs and refiner steps that fill MARGIN of the budget after `spent_s`, in the ratio of the preset's
    `epochs` to its `refiner_steps` (the epochs rounded down, the refiner given the rest); epochs already trained
    (`done_epochs`, a resumed fold given a new budget) count on top. `cap`: the budget as a cap, never more than
    the preset's `epochs` and `refiner_steps` (the preset's own schedule where it fits, shortened where not). A
    budget that cannot hold one epoch and MIN_REFINER_STEPS is a UserError saying the least it needs."""
    epoch, step = epoch_seconds(work, rates), rates.refiner_step_s * work.refiners
    fixed = fixed_seconds(work, rates)
    available = MARGIN * budget_s - spent_s - fixed
    least = epoch + (MIN_REFINER_STEPS * step if work.refiners else 0.0)
    if available < least:
        raise TooShort((least + fixed + spent_s) / MARGIN, epoch, step, fixed, spent_s)
    if work.refiners and refiner_steps:
        scale = available / (epochs * epoch + refiner_steps * step)
        more = max(1, math.floor(scale * epochs))
        while more > 1 and available - more * epoch < MIN_REFINER_STEPS * step:
            more -= 1
        steps = max(MIN_REFINER_STEPS, math.floor((available - more * epoch) / step))
    else:
        more, steps = max(1, math.floor(available / epoch)), 0
    if cap:  # the rest of the budget left unspent: the preset's schedule is all the fold asks for
        more = max(1, min(more, epochs - done_epochs))
        steps = min(steps, refiner_steps)
    total = done_epochs + more
    return {"budget_s": round(budget_s, 1), "epochs": total, "refiner_steps": steps, "cap": cap,
            "warmup": min(warmup, max(0, total - 2)), "epoch_s": round(epoch, 3),
            "refiner_step_s": round(rates.refiner_step_s, 4), "refiners": work.refiners, "fixed_s": round(fixed, 1),
            "planned_s": round(spent_s + more * epoch + steps * step + fixed, 1), "source": rates.source,
            "preset_epochs": epochs, "preset_steps": refiner_steps, "rates": asdict(rates)}


def replan(plan: dict, epoch_s: float, budget_s: float, spent_s: float, work: Work, done: int,
           always: bool = False) -> dict | None:
    """The plan made again from epochs timed here (`epoch_s` a epoch, wall time, callbacks and saving included)
    when that is off the planned by more than REPLAN_TOLERANCE (or `always`: the guard's check; else the first
    epoch's, whose time less the first steps' tracing, rates.trace_s, is what the epochs after it take), the
    `done` epochs counted and the warm-up kept. Late in the fold (their schedule under way) never more epochs than
    planned before, and the guard takes the time from the refiner first (down to MIN_REFINER_STEPS), the epochs
    only when that is not enough; None: kept."""
    rates = Rates(**plan["rates"])
    if not always:  # the first epoch traced the training and validation steps: a one-off the others do not pay
        epoch_s = max(epoch_s - rates.trace_s, 1e-3)
        if abs(epoch_s - plan["epoch_s"]) <= REPLAN_TOLERANCE * plan["epoch_s"]:
            return None
    steps_s = max(epoch_s - work.val_images * rates.eval_image_s, 1e-3)
    measured = dataclasses.replace(rates, train_step_s=steps_s / math.ceil(work.train_images / work.batch),
                                   source=rates.source.split("; ")[0] + "; its epochs timed")
    if always and done > 1 and work.refiners:  # the guard: the epochs' schedule kept while the refiner can give
        kept = _refiner_fitted(plan, measured, budget_s, spent_s, work, done, least=0)
        if kept is not None and kept["refiner_steps"] >= MIN_REFINER_STEPS:
            return {**kept, "replanned": True, "replanned_after": done}
    try:
        again = make_plan(budget_s, spent_s, plan["preset_epochs"], plan["preset_steps"], plan["warmup"], work,
                          measured, done, plan.get("cap", False))
    except TooShort:  # the epochs took what was left: no more of them, the least refiner
        again = {**plan, "epochs": done, "refiner_steps": MIN_REFINER_STEPS if work.refiners else 0}
    if again["epochs"] > plan["epochs"] and done > 1:  # late in the fold: the schedule kept, the refiner fitted
        again = _refiner_fitted(plan, measured, budget_s, spent_s, work, done)
        if again is None:
            return None
    return {**again, "warmup": plan["warmup"], "replanned": True, "replanned_after": done}


def _refiner_fitted(plan: dict, rates: Rates, budget_s: float, spent_s: float, work: Work, done: int,
                    least: int = MIN_REFINER_STEPS) -> dict | None:
    """The plan's epochs kept (their schedule is under way) and its refiner given what is left after them at
    `rates` (`least` at least, never more than planned); None: the plan fits as it is."""
    epoch, fixed = epoch_seconds(work, rates), fixed_seconds(work, rates)
    step = rates.refiner_step_s * work.refiners
    left = MARGIN * budget_s - spent_s - fixed - (plan["epochs"] - done) * epoch
    steps = min(plan["refiner_steps"], max(least, math.floor(left / step))) if step else 0
    if steps == plan["refiner_steps"]:
        return None
    return {**plan, "refiner_steps": steps, "epoch_s": round(epoch, 3), "rates": asdict(rates),
            "planned_s": round(spent_s + (plan["epochs"] - done) * epoch + steps * step + fixed, 1)}


class TooShort(UserError):
    """A budget that cannot hold one epoch and the refiner's least steps."""

    def __init__(self, least_s: float, epoch_s: float, step_s: float, fixed_s: float, spent_s: float):
        self.least_s = least_s
        refiner = f" + the refiner's {MIN_REFINER_STEPS} steps {format_duration(MIN_REFINER_STEPS * step_s)}" \
            if step_s else ""
        super().__init__(f"needs at least {format_duration(least_s)} here (one epoch {format_duration(epoch_s)}"
                         f"{refiner} + after training {format_duration(fixed_s)} + {format_duration(spent_s)} spent "
                         f"before it, with a {1 - MARGIN:.0%} margin)")


def describe(plan: dict, started: float) -> str:
    """The plan in one line: epochs x seconds, refiner steps, the expected end (wall clock)."""
    end = time.strftime("%H:%M", time.localtime(time.time() - (time.monotonic() - started) + plan["planned_s"]))
    refiner = (f" + {plan['refiners']} refiner(s) x {plan['refiner_steps']:,} steps x {plan['refiner_step_s']:.3f} s"
               if plan["refiner_steps"] else "")
    again = f"replanned after epoch {plan.get('replanned_after', 1)}: " if plan.get("replanned") else ""
    cap = (f" (a cap: at most the preset's {plan['preset_epochs']} epochs"
           + (f" and {plan['preset_steps']:,} refiner steps)" if plan["refiners"] else ")") if plan.get("cap") else "")
    return (f"budget {format_duration(plan['budget_s'])}{cap}: {again}{plan['epochs']} epochs x {plan['epoch_s']:.1f} s"
            f"{refiner} + {plan['fixed_s']:.0f} s after training = {format_duration(plan['planned_s'])} planned, "
            f"ending about {end} ({plan['source']})")


# --- the rates: measured here, kept per machine and shape -----------------------------------------------------
RATES_ENTRY = Shape("measured step times", required={"train_step_s": "finite", "eval_image_s": "finite",
                                                     "refiner_step_s": "finite", "decode_s": "finite",
                                                     "trace_s": "finite"},
                     optional={"source": "str", "reload_s": "finite", "refiner_trace_s": "finite"})
RATES_SHAPE = Shape("measured step times", check=lambda r: next(
    (f"{key!r}: {RATES_ENTRY.problem(v)}" for key, v in r.items() if RATES_ENTRY.problem(v)), None))


def rates_cache_path() -> Path:
    """Beside the measured XLA choices (runtime.xla_cache_path): ~/.cache/competition/steps.json."""
    return xla_cache_path().with_name("steps.json")


def read_rates_cache() -> dict:
    path = rates_cache_path()
    return records.load(path, RATES_SHAPE, f"delete {path}: train measures the steps again") if path.is_file() else {}


def cached_rates(key: str, measure: Callable[[], Rates]) -> Rates:
    """The rates measured for `key` on this machine before, else measured now and kept."""
    cache = read_rates_cache()
    if "reload_s" in cache.get(key, {}):  # kept by this version (an older one did not time the reload): read
        return Rates(**{**cache[key], "source": f"measured here before ({rates_cache_path()})"})
    rates = measure()
    cache[key] = asdict(rates)
    write_json(rates_cache_path(), cache)
    return rates


def timed(call: Callable[[], object], rounds: int = 3) -> tuple[float, float]:
    """(median seconds of `call` after a first, untimed one; the first one's extra over that median)."""
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return median, max(0.0, first - median)


def measure(build: Callable[[], object], train_shape: tuple[int, int], batch: int, frame: tuple[int, int],
            eval_batch: int, refiner_policy: str | None = None, photo: Callable[[], object] | None = None,
            guide: tuple[int, int] = (320, 480)) -> Rates:
    """Time this machine: `build()`'s model (compiled as training compiles it) on a batch of `train_shape` inputs
    and on whole frames, the refiner (refiner_policy None: the fold trains none) on crops drawn as its training
    draws them from photos at the `guide` size, and `photo()` (one photo's preparation for the refiner). Random
    inputs: a step's time does not depend on what it sees."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((batch, *train_shape, 3), dtype=np.float32)
    y = (rng.random((batch, *train_shape, 1)) > 0.5).astype(np.float32)
    frames = rng.random((eval_batch, *frame, 3), dtype=np.float32)
    model = build()
    train_s, trace_s = timed(lambda: model.train_on_batch(x, y))
    eval_s, eval_trace_s = timed(lambda: model.predict_on_batch(frames))
    with tempfile.TemporaryDirectory() as tmp:  # as the best model is saved each epoch and reloaded after the last
        t0 = time.perf_counter()
        model.save(Path(tmp) / "m.keras")
        keras.saving.load_model(Path(tmp) / "m.keras", compile=False)
        reload_s = time.perf_counter() - t0
    refiner_s = decode_s = refiner_trace_s = 0.0
    if refiner_policy is not None:
        from .refiner import BATCH, CROP, Samples, crop_sampler, new_refiner
        refiner = new_refiner(1000, refiner_policy)
        n = 4
        draw = crop_sampler(Samples([str(i) for i in range(n)], rng.integers(0, 256, (n, *guide, 3), np.uint8),
                                    rng.integers(0, 256, (n, *guide), np.uint8),
                                    rng.integers(0, 256, (n, *guide), np.uint8)), CROP, 0)
        refiner_s, refiner_trace_s = timed(lambda: refiner.train_on_batch(*draw(BATCH)))
        if photo is not None:
            decode_s, _ = timed(photo)
    keras.backend.clear_session()
    return Rates(train_s, eval_s / eval_batch, refiner_s, decode_s, trace_s + eval_trace_s, reload_s,
                 refiner_trace_s, f"measured here {time.strftime('%Y-%m-%d')}")


@dataclass(frozen=True)
class Budget:
    """`train --budget`: its seconds, counted from `started` (time.monotonic() when the command began), and the
    refiners the fold's command trains after it (training.stage knows which: `refiners_after`)."""

    seconds: float
    started: float
    refiners: int = 0
    own_photos: bool = False  # the refiner learns from the fold's own training photos (predicted first)
    cap: bool = False  # a cap (`train --budget-cap`): at most the preset's schedule, shorter where it does not fit

    def spent(self) -> float:
        return time.monotonic() - self.started


def training_end(plan: dict | None, budget: Budget | None) -> float | None:
    """The monotonic time by which a budgeted fold's epochs must end for the work after them to fit (None: no
    budget): the guard that ends training early, the fold finished, if the plan was too hopeful."""
    if plan is None or budget is None:
        return None
    after = plan["fixed_s"] + plan.get("refiners", 0) * plan["refiner_steps"] * plan["refiner_step_s"]
    return budget.started + budget.seconds - after


def fold_work(budget: Budget, train_images: int, val_images: int, batch: int) -> Work:
    """The fold's work as the plan counts it: a refiner learns from the fold's training photos (predicted) or from
    every fold's held-out photos (the run's)."""
    photos = train_images if budget.own_photos else train_images + val_images
    return Work(train_images, val_images, batch, budget.refiners, photos if budget.refiners else 0, budget.own_photos)


def keeps(kept: dict | None, budget: Budget) -> bool:
    """Whether a fold's kept plan (budget.json) was made for this budget: a resume keeps it, another budget (or the
    same as a cap where it was filled, or the other way) plans anew."""
    return (kept is not None and abs(kept["budget_s"] - round(budget.seconds, 1)) < 0.05
            and kept.get("cap", False) == budget.cap)


def refiner_steps_at(plan: dict, left_s: float, count: int) -> int:
    """The refiners' steps planned again as they start, from `left_s`, the seconds left to the plan's end (MARGIN of
    the budget) now that the epochs and the photos' preparation are behind: each of the `count` refiners to train
    traced once and saved, then its share of the rest in steps at the plan's rate (1 at least: fewer than
    MIN_REFINER_STEPS over a complete schedule learn more than more steps cut by the deadline before their rate
    has decayed). A fold whose epochs ran late gives its refiner fewer steps over a complete schedule; one whose
    epochs left slack gives it to the refiner."""
    rates = Rates(**plan["rates"])
    if not rates.refiner_step_s or count < 1:
        return plan["refiner_steps"]
    start = rates.refiner_trace_s + REFINER_SAVE_S
    steps = max(1, math.floor((left_s - count * start) / (count * rates.refiner_step_s)))
    return min(steps, plan["preset_steps"]) if plan.get("cap") else steps


def plan_for(budget: Budget, kept: dict | None, done_epochs: int, epochs: int, refiner_steps: int, warmup: int,
             work: Work, rates: Callable[[], Rates]) -> tuple[dict, bool]:
    """(the fold's plan, whether it is new): the one kept in budget.json when it was made for this budget (a
    resume), else one made now from the rates (measured, or read from their cache); a new budget for a fold
    already part-trained plans the epochs after those done."""
    if keeps(kept, budget):
        return kept, False
    return make_plan(budget.seconds, budget.spent(), epochs, refiner_steps, warmup, work, rates(), done_epochs,
                     budget.cap), True


def cheaper(cfg: TrainConfig) -> str:
    """", or a cheaper preset (--preset P)": the offered preset next below `cfg` in a training step's work (input
    pixels x filters squared, a proxy of its FLOPs), if any."""
    def work(c: TrainConfig) -> int:
        return c.train_size[0] * c.train_size[1] * c.filters ** 2
    smaller = sorted((work(preset(n)), n) for n in OFFERED if n != cfg.preset and work(preset(n)) < work(cfg))
    return f", or a cheaper preset (--preset {smaller[-1][1]})" if smaller else ""


def checked_plan(plan: dict, budget: Budget, epoch_s: float | None, done: int, always: bool, n_train: int,
                 n_val: int, batch: int, out: Path, restart_s: float = 0.0) -> dict:
    """The plan after the epochs just trained (`epoch_s`: their mean seconds, validation and callbacks included;
    None: none ran): made again when that is off the planned by more than REPLAN_TOLERANCE, or `always` (the guard
    saw the fold would overrun), and written to budget.json; kept otherwise. `restart_s`: what the last fit spent
    beyond its epochs (its data pipeline started, its steps traced), spent once more by the fit that goes on."""
    if epoch_s is None:
        return plan
    again = replan(plan, epoch_s, budget.seconds, budget.spent() + restart_s,
                   fold_work(budget, n_train, n_val, batch), done, always)
    if again is None:
        return plan
    write_plan(out, again)
    say(describe(again, budget.started))
    return again
