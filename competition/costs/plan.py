"""What a recipe costs on Kaggle before you spend it: GPU hours per training fold and per test pass, sessions and
shards under the 12-hour limit, and the total against the weekly GPU quota.

Every figure says where it comes from. Throughput, in order of preference: stated on the command line; measured for
the preset on some GPU (`MEASURED`, scaled to the target GPU by the ratio of published peak FLOPS); or estimated from
the model's FLOPs (`models.cost.forward_flops`) at an efficiency calibrated on the measured presets, else at the
bench's assumed efficiency (`costs.T4_EFFICIENCY`). The arithmetic is pure functions of those rates (`cost`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.errors import UserError
from ..base.tta import TTAS
from ..config import PRESETS, TrainConfig, preset
from ..kaggle.machines import (SESSION_CPU_CORES, SESSION_HOURS, TIME_MARGIN_SECONDS, WEEKLY_QUOTA_HOURS, accelerator,
                               session_hours, usable_hours)
from ..models import build_model
from ..models.cost import forward_flops, training_memory_estimate
from ..models.refiner import refiner_flops
from ..training.budget import MARGIN
from .facts import CARDS, MULTI_GPU_SCALING, T4_EFFICIENCY, TEST_IMAGES, TRAIN_IMAGES, fold_images

# What one CPU core delivers to training when every input is a full-resolution JPEG decoded, padded, cropped
# and augmented (`make bench` section 8, --cache memory, one thread). Only full-resolution decodes were
# measured: a preset that decodes at 1/2 or less (JPEG reduction) is not capped.
PIPELINE_PER_CORE = {"img_s": 9.3, "source": "`make bench` section 8 on this project's 2-core AMD EPYC VM, under "
                     "load, 2026-11-27: 1280x1920 frames, 1024x1024 crops, from memory, one thread"}
# What post-processing one test image costs on one CPU core, by the run's `refine` (`make bench` sections 2 and
# 10: resize to 1918x1280, threshold, RLE; "guided" adds the 1/4 JPEG decode and the guided filter, "net" the
# refiner net's 320x480 pass before it). predict runs it on POST_THREADS threads beside the GPU: the test pass
# takes at least the images over that rate.
POSTPROCESS_MS = {"none": 2.0, "guided": 27.0, "net": 205.0}
POSTPROCESS_SOURCE = ("`make bench` section 10 (and 2) on this project's 2-core AMD EPYC VM, one thread, "
                      "2026-11-27: 26.5 against 2.0 ms on 48 real photos; the refiner net (refine=net, on the CPU "
                      "threads) 205 ms on 20 real photos, docs/results.md")
POST_THREADS = 2  # inference.writer.write_stream's post-processing pool
# On a GPU session the refiner net's pass runs on the GPU (Keras places it there), one image at a time (its
# lock): its FLOPs at the card's fp32 peak x costs.T4_EFFICIENCY, plus this much per call. ASSUMED, not measured
# (no GPU here): the fixed cost of one Keras predict_on_batch and the 2.5 MB input's copy to the card.
REFINER_CALL_MS = 5.0



def session_gpus(name: str) -> tuple[str, int]:
    """(card, GPUs in one Kaggle session) of an --accelerator (kaggle/machines.py); one without a GPU is refused."""
    machine = accelerator(name)
    if machine.card is None:
        raise UserError(f"--accelerator {name}: plan costs GPU sessions; this one has no GPU")
    return machine.card, machine.gpus

# Measured throughput per preset, at the preset's training input (its crop, else its frame) and batch, in
# the preset's precision: filled from runs on a real GPU, each naming its card (a key of CARDS). Empty: no
# measurement yet, and `plan` says its figures are FLOP estimates. Example of an entry:
# "full": {"device": "H100", "train_img_s": 0.0, "predict_img_s": 0.0, "precision": "fp16",
#          "batch": 8, "how": "Keras 3 on JAX, mixed_float16, median of N steps after warm-up"},
# "calibrates": False keeps an entry out of the efficiency that estimates other presets (a 96x128 net leaves
# most of an H100 idle, so its fraction of peak says nothing about a full-resolution one).
_ARTICLE_H100 = ("python -m competition calibrate --mixed-precision on a lent H100 80GB HBM3, Keras 3.15.1 on "
                 "JAX, median of 8 steps after 2 warm-up steps, 2026-11-27 (bench/calibration-h100.json)")
MEASURED: dict[str, dict] = {
    "article-simple": {"device": "H100", "train_img_s": 3367.37, "predict_img_s": 1935.73, "precision": "fp16",
                       "batch": 32, "how": _ARTICLE_H100, "calibrates": False},
    "article-unet": {"device": "H100", "train_img_s": 965.58, "predict_img_s": 1059.90, "precision": "fp16",
                     "batch": 32, "how": _ARTICLE_H100, "calibrates": False},
}


@dataclass(frozen=True)
class Rates:
    """Images per second on ONE GPU of the target card: training inputs (crops or frames), whole frames."""

    train_img_s: float
    predict_img_s: float
    source: str


@dataclass(frozen=True)
class Recipe:
    """What is run: folds of a preset, each trained in its own kernel, then one test pass over all of them."""

    preset: str
    folds: tuple[int, ...]
    epochs: int
    train_images: int     # per fold
    val_images: int       # per fold
    tta_passes: int
    gpus: int             # GPUs per session (training and the test pass use all; out-of-fold and scoring one)
    session_hours: float = 12.0  # a Kaggle session's length (machines.session_hours)
    test_images: int = TEST_IMAGES


def recipe_for(cfg: TrainConfig, folds: list[int] | None, tta: str, gpu: str, hours: float | None = None) -> Recipe:
    """The recipe of training `folds` (default: all k) of `cfg` and predicting with TTA `tta` on accelerator `gpu`,
    in sessions of `hours` (default: KAGGLE_SESSION_HOURS, else Kaggle's 12)."""
    card, gpus = session_gpus(gpu)
    if tta not in TTAS:
        raise UserError(f"unknown --tta {tta!r}: choose one of {', '.join(TTAS)}")
    folds = list(range(cfg.k)) if folds is None else folds
    bad = [f for f in folds if not 0 <= f < cfg.k]
    if bad or not folds or len(set(folds)) != len(folds):
        raise UserError(f"--folds {','.join(map(str, folds))}: need distinct folds within 0..{cfg.k - 1}")
    train, val = fold_images(cfg)
    return Recipe(cfg.preset, tuple(folds), cfg.epochs, train, val, len(TTAS[tta]), gpus, session_hours(hours))


def pipeline_rate(cfg: TrainConfig, cores: int = SESSION_CPU_CORES) -> tuple[float | None, str]:
    """Training inputs a second a session's CPUs can decode and augment for `cfg` (None: not measured for its
    decode size, so not a limit `plan` applies), and where the figure comes from."""
    from ..base.images import reduction_for
    if reduction_for(cfg.size) != 1:
        return None, (f"not capped: the pipeline was measured only for full-resolution decodes, and {cfg.size[0]}x"
                      f"{cfg.size[1]} decodes at 1/{reduction_for(cfg.size)} scale")
    rate = PIPELINE_PER_CORE["img_s"] * cores
    return rate, f"{cores} cores x {PIPELINE_PER_CORE['img_s']:g} img/s per core ({PIPELINE_PER_CORE['source']})"


MEASURED_GUIDE = (320, 480)  # the guide POSTPROCESS_MS was measured on: cpu's 1/4 decode


def guide_of(cfg: TrainConfig) -> tuple[int, tuple[int, int]]:
    """The JPEG reduction a run's refinement decodes its guide at, and the guide's (height, width)."""
    from ..base.geometry import Geometry
    from ..inference.upsample import guide_reduction
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    r = guide_reduction(geometry)
    return r, (math.ceil(geometry.native[0] / r), math.ceil(geometry.native[1] / r))


def post_rate(cfg: TrainConfig, card: str | None = None) -> tuple[float, str]:
    """Test images a second predict's post-processing turns into rows for `cfg`, and where it comes from.
    A refinement's share scales with its guide's pixels (a 640x960 model is guided by the native photo, 16x
    cpu's). On the CPU (card None) the refiner net runs one image at a time (its lock), the rest on
    POST_THREADS threads. On a `card` session the net's pass is the GPU's (an ESTIMATE, `gpu_refiner_ms`) and
    the CPU threads do what `guided` does; the slower of the two sets the rate."""
    refine = "guided" if cfg.refine == "net" and card else cfg.refine
    ms, threads, scaled = POSTPROCESS_MS[refine], POST_THREADS, ""
    if refine != "none":
        r, guide = guide_of(cfg)
        scale = guide[0] * guide[1] / (MEASURED_GUIDE[0] * MEASURED_GUIDE[1])
        ms = POSTPROCESS_MS["none"] + (ms - POSTPROCESS_MS["none"]) * scale
        scaled = f", scaled to a 1/{r} guide: {scale:.2g}x the pixels it was measured on"
        threads = 1 if refine == "net" else POST_THREADS
    rate = threads * 1e3 / ms
    what = f"refine={refine}" if refine == cfg.refine else "refine=net less its net: the guided filter"
    how = (f"{threads} post-processing thread(s) x {ms:g} ms an image ({what}{scaled}; "
           f"{POSTPROCESS_SOURCE})")
    if refine == cfg.refine:
        return rate, how
    gpu_ms, gpu_how = gpu_refiner_ms(guide, card)  # each thread waits for its image's pass: it adds to the thread
    rate = min(threads * 1e3 / (ms + gpu_ms), 1e3 / gpu_ms)
    return rate, (f"{threads} post-processing thread(s) x ({ms:g} ms an image on the CPU ({what}{scaled}; "
                  f"{POSTPROCESS_SOURCE}) + the refiner net's pass on the {card}, one image at a time: {gpu_how}); "
                  f"not counted: the kernel's `refiner --test-only` before the test pass (a few minutes)")


def post_gpu_ms(cfg: TrainConfig, card: str | None) -> float:
    """Milliseconds of the card's time post-processing takes per test image: the refiner net's pass on a GPU
    session (shared with the first stage's passes), else none."""
    if cfg.refine != "net" or not card:
        return 0.0
    return gpu_refiner_ms(guide_of(cfg)[1], card)[0]


def gpu_refiner_ms(guide: tuple[int, int], card: str) -> tuple[float, str]:
    """ESTIMATED milliseconds of one refiner pass over a guide on `card`, and how (not measured: no GPU here)."""
    flops = refiner_flops(*guide)
    compute = flops / (peak(card, "fp32") * 1e12 * T4_EFFICIENCY["fp32"]) * 1e3
    return compute + REFINER_CALL_MS, (f"ESTIMATE {compute + REFINER_CALL_MS:.1f} ms an image = {flops / 1e9:.1f} "
                                       f"GFLOP at {T4_EFFICIENCY['fp32']:.0%} of {peak(card, 'fp32'):g} TFLOPS "
                                       f"fp32 + {REFINER_CALL_MS:g} ms a call (ASSUMED)")


def cost(recipe: Recipe, rates: Rates, pipeline_img_s: float | None = None, post_img_s: float | None = None,
         post_gpu_ms: float = 0.0) -> dict:
    """Hours (session wall time, what the quota counts) of each part of a recipe at `rates`. Training goes
    at the slower of the session's GPUs and its CPU input pipeline (`pipeline_img_s`, None: no limit); the test
    pass at the slower of the session's GPUs (each a copy of the models, batches in turn; plus `post_gpu_ms` of
    post-processing an image on one of them) and the CPU post-processing (`post_img_s`, None: no limit)."""
    speedup = 1 + MULTI_GPU_SCALING * (recipe.gpus - 1)
    gpu_train = rates.train_img_s * speedup
    train_rate = gpu_train if pipeline_img_s is None else min(gpu_train, pipeline_img_s)
    epoch_s = (recipe.train_images / train_rate
               + recipe.val_images / (rates.predict_img_s * speedup))
    train_h = recipe.epochs * epoch_s / 3600
    # after training: out-of-fold probabilities (one pass) and the kernel's scoring (TTA passes), one GPU
    finish_h = recipe.val_images * (1 + recipe.tta_passes) / rates.predict_img_s / 3600
    fold_sessions = math.ceil(train_h / usable_hours("train", recipe.session_hours))
    # predict gives each of the session's GPUs a copy of the models and every other batch (the refiner net: one)
    gpu_predict_h = (recipe.test_images * recipe.tta_passes * len(recipe.folds) / (rates.predict_img_s * speedup)
                     / 3600 + recipe.test_images * post_gpu_ms / 3.6e6)
    post_h = 0.0 if post_img_s is None else recipe.test_images / post_img_s / 3600  # once per image, after TTA
    predict_h = max(gpu_predict_h, post_h)
    shards = max(1, math.ceil(predict_h / usable_hours("predict", recipe.session_hours)))
    folds_h = len(recipe.folds) * (train_h + finish_h)
    total = folds_h + predict_h
    return {"speedup": speedup, "gpu_train_img_s": gpu_train, "train_img_s": train_rate,
            "cpu_bound": train_rate < gpu_train, "epoch_s": epoch_s, "fold_train_h": train_h, "fold_finish_h": finish_h,
            "fold_h": train_h + finish_h, "fold_sessions": fold_sessions, "folds_h": folds_h,
            "train_kernels": len(recipe.folds) * fold_sessions, "predict_h": predict_h, "gpu_predict_h": gpu_predict_h,
            "post_h": post_h, "predict_cpu_bound": post_h > gpu_predict_h, "shards": shards,
            "total_h": total, "quota_fraction": total / WEEKLY_QUOTA_HOURS,
            "weeks": max(1, math.ceil(total / WEEKLY_QUOTA_HOURS))}


def epochs_within(c: dict, budget_s: float) -> int:
    """The epochs a fold's `train --budget` holds at `c`'s rates after its out-of-fold pass and scoring, MARGIN kept."""
    return max(0, math.floor((MARGIN * budget_s - c["fold_finish_h"] * 3600) / c["epoch_s"]))


def session_cap(recipe: Recipe, c: dict) -> str:
    """What a train kernel's default budget (the session as a cap) makes of the preset's epochs."""
    fits, what = epochs_within(c, usable_hours("train", recipe.session_hours) * 3600), "; a train kernel's default " \
        "budget (the session as a cap)"
    return (f"{what} keeps the preset's {recipe.epochs} epochs" if fits >= recipe.epochs else
            f"{what} plans {fits} of its {recipe.epochs} epochs to end in one session")


def refusal(recipe: Recipe, c: dict) -> str | None:
    """Why the recipe cannot run one session per fold and one for the test pass (None if it can)."""
    if c["fold_sessions"] > 1:
        return (f"one fold of {recipe.preset} needs {c['fold_train_h']:.1f} h of training but a session gives it "
                f"{usable_hours('train', recipe.session_hours):.2f} h ({recipe.session_hours:g} h less the train "
                f"kernel's {TIME_MARGIN_SECONDS['train'] // 60} min margin): pass --allow-split to plan "
                f"{c['fold_sessions']} resumed sessions per fold (`kernel push --budget none`), or lower --epochs"
                f"{session_cap(recipe, c)}")
    if c["shards"] > 1:
        return (f"the test pass needs {c['predict_h']:.1f} h but a session gives it "
                f"{usable_hours('predict', recipe.session_hours):.2f} h ({recipe.session_hours:g} h less the predict "
                f"kernel's {TIME_MARGIN_SECONDS['predict'] // 60} min margin): pass "
                f"--allow-split to plan {c['shards']} shards, or fewer --folds or --tta none")
    return None


# --- where the rates come from --------------------------------------------------------------------
def peak(card: str, precision: str) -> float:
    gpu = CARDS[card]
    return gpu.fp16_tflops if precision == "fp16" else gpu.fp32_tflops


def scaled_measurement(m: dict, card: str) -> Rates:
    """A MEASURED entry on its device, scaled to `card` by the ratio of their published peaks."""
    if m["device"] not in CARDS:
        raise UserError(f"MEASURED names device {m['device']!r}, not one of {', '.join(CARDS)}")
    ratio = peak(card, m["precision"]) / peak(m["device"], m["precision"])
    how = (f"measured on {m['device']} ({m['precision']}, batch {m.get('batch', '?')}: "
           f"{m['train_img_s']:.1f} train / {m['predict_img_s']:.1f} predict img/s"
           + (f", {m['how']}" if m.get("how") else "") + ")")
    if m["device"] != card:
        how += (f", scaled to {card} by peak {m['precision']} {peak(card, m['precision']):g} / "
                f"{peak(m['device'], m['precision']):g} TFLOPS")
    return Rates(m["train_img_s"] * ratio, m["predict_img_s"] * ratio, how)


def flop_rates(train_flops: float, frame_flops: float, card: str, precision: str,
               efficiency: tuple[float, float], efficiency_source: str) -> Rates:
    """Rates from FLOPs per image (forward; training = 3x) at `efficiency` (train, predict) of the peak."""
    tflops = peak(card, precision)
    return Rates(tflops * 1e12 * efficiency[0] / (3 * train_flops), tflops * 1e12 * efficiency[1] / frame_flops,
                 f"ESTIMATE from FLOPs: {train_flops / 1e9:.0f} GFLOP per training input x 3, {frame_flops / 1e9:.0f} "
                 f"GFLOP per frame; {card} {precision} peak {tflops:g} TFLOPS ({CARDS[card].source}) x "
                 f"{efficiency_source}")


def implied_efficiency(m: dict, train_flops: float, frame_flops: float) -> tuple[float, float]:
    """The fraction of its device's peak a measurement reached, training and predicting."""
    tflops = peak(m["device"], m["precision"]) * 1e12
    return m["train_img_s"] * 3 * train_flops / tflops, m["predict_img_s"] * frame_flops / tflops


def model_flops(cfg: TrainConfig) -> tuple[float, float]:
    """Forward FLOPs of one training input (crop or frame) and of one whole frame (builds the model twice)."""
    import keras

    out = []
    for size in (cfg.train_size, cfg.size):
        model = build_model(cfg, size)
        out.append(forward_flops(model))
        del model
        keras.backend.clear_session()
    return out[0], out[1]


def train_memory_gb(cfg: TrainConfig, precision: str) -> float:
    """GPU memory to train one replica's batch, as README's table estimates it: parameters x 16 bytes (weights,
    gradients, Adam's two moments) + every layer's output at the batch size (2 bytes each in fp16, else 4)."""
    import keras

    model = build_model(cfg, cfg.train_size)
    total = training_memory_estimate(model, cfg.batch, 2 if precision == "fp16" else 4)
    del model
    keras.backend.clear_session()
    return total / 1e9


def rates_for(cfg: TrainConfig, card: str, precision: str) -> tuple[Rates, tuple[float, float] | None]:
    """The preset's rates on one `card` (measured, else estimated) and its FLOPs when they were needed."""
    if cfg.preset in MEASURED:
        return scaled_measurement(MEASURED[cfg.preset], card), None
    train_flops, frame_flops = model_flops(cfg)
    calibrations = []
    for name, m in MEASURED.items():
        if m["precision"] == precision and name in PRESETS and m.get("calibrates", True):
            calibrations.append((name, implied_efficiency(m, *model_flops(preset(name)))))
    if calibrations:
        eff = tuple(sum(c[1][k] for c in calibrations) / len(calibrations) for k in (0, 1))
        names = ", ".join(c[0] for c in calibrations)
        source = (f"efficiency {eff[0]:.0%} training / {eff[1]:.0%} predicting, the mean fraction of peak that the "
                  f"measured presets ({names}) reached (MEASURED)")
    else:
        eff = (T4_EFFICIENCY[precision],) * 2
        source = f"{eff[0]:.0%} ASSUMED efficiency (costs.T4_EFFICIENCY; no preset is measured on a GPU yet)"
    return flop_rates(train_flops, frame_flops, card, precision, eff, source), (train_flops, frame_flops)


# --- the table ------------------------------------------------------------------------------------
def render(cfg: TrainConfig, recipe: Recipe, rates: Rates, c: dict, gpu: str, precision: str,
           memory_gb: float | None = None, pipeline_source: str = "not capped", post_source: str = "not capped") -> str:
    """The plan as a Markdown table: every figure with how it was computed and where its inputs come from."""
    card, n = session_gpus(gpu)
    session_source = (f"Kaggle's {SESSION_HOURS:g} h" if recipe.session_hours == SESSION_HOURS else
                      f"{recipe.session_hours:g} h by --session-hours or KAGGLE_SESSION_HOURS")
    folds = ",".join(map(str, recipe.folds))
    crop = f", random {cfg.crop[0]}x{cfg.crop[1]} crops" if cfg.crop else ""
    head = (f"plan: preset {cfg.preset} ({cfg.height}x{cfg.width} {cfg.fit}{crop}, batch {cfg.batch} per GPU, "
            f"up to {recipe.epochs} epochs), folds {folds}, TTA {recipe.tta_passes} pass(es), --accelerator {gpu} "
            f"({n}x {card}), {precision}")
    rows = [
        ["throughput, one " + card, f"{rates.train_img_s:.1f} train / {rates.predict_img_s:.1f} predict img/s",
         rates.source],
        ["train speed-up on this session", f"{c['speedup']:.2f}x",
         f"{n} GPU(s), MirroredStrategy; each extra GPU assumed to add {MULTI_GPU_SCALING:.0%} of one"],
        ["input pipeline must deliver", f"{c['gpu_train_img_s']:.0f} img/s",
         "training inputs a second that the session's CPUs must decode and augment to keep its GPUs busy"],
        ["training rate", f"{c['train_img_s']:.0f} img/s" + (" (**CPU-bound**)" if c["cpu_bound"] else ""),
         "the slower of the GPUs and the CPU input pipeline: " + pipeline_source],
        ["one epoch", f"{c['epoch_s'] / 60:.1f} min",
         f"{recipe.train_images:,} training inputs + {recipe.val_images:,} whole validation frames "
         f"({TRAIN_IMAGES:,} Kaggle training images, k={cfg.k})"],
        ["one fold, training", f"{c['fold_train_h']:.2f} h",
         f"{recipe.epochs} epochs (the most; early stopping can end sooner)"],
        ["one fold, after training", f"{c['fold_finish_h']:.2f} h",
         f"out-of-fold pass + scoring with {recipe.tta_passes} TTA pass(es), one GPU"],
        ["sessions per fold", f"{c['fold_sessions']}",
         f"training within {usable_hours('train', recipe.session_hours):.2f} h a session ({session_source} less "
         f"{TIME_MARGIN_SECONDS['train'] // 60} min); more than 1 = resumed sessions{session_cap(recipe, c)}"],
        [f"training, {len(recipe.folds)} fold(s)", f"{c['folds_h']:.1f} h", f"{c['train_kernels']} kernel session(s)"],
        ["test pass", f"{c['predict_h']:.1f} h" + (" (**CPU-bound**)" if c["predict_cpu_bound"] else ""),
         f"the slower of {recipe.test_images:,} test images x {recipe.tta_passes} TTA x {len(recipe.folds)} fold(s) "
         f"on {n} GPU(s), a copy of the models on each ({c['gpu_predict_h']:.2f} h at {c['speedup']:.2f}x one), "
         f"and their post-processing ({c['post_h']:.2f} h: {post_source})"],
        ["predict shards", f"{c['shards']}",
         f"within {usable_hours('predict', recipe.session_hours):.2f} h a session ({session_source} less "
         f"{TIME_MARGIN_SECONDS['predict'] // 60} min)"],
        ["total", f"**{c['total_h']:.1f} h**",
         f"{c['quota_fraction']:.0%} of the {WEEKLY_QUOTA_HOURS:g} h weekly GPU quota: {c['weeks']} week(s); "
         f"session start-up and data loading not counted"],
    ]
    if memory_gb is not None:
        fits = "fits" if memory_gb < 0.9 * CARDS[card].memory_gb else "DOES NOT FIT"
        rows.insert(1, ["GPU memory to train", f"{memory_gb:.1f} GB per GPU",
                        f"estimate: parameters x 16 B + every layer's output x batch {cfg.batch} "
                        f"({precision}); {fits} a {CARDS[card].memory_gb:g} GB {card}"])
    lines = [head, "", "| item | figure | how, and from what |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {s} |" for a, b, s in rows]
    return "\n".join(lines)


def plan(cfg: TrainConfig, folds: list[int] | None, tta: str, gpu: str, allow_split: bool = False,
         stated: tuple[float, float] | None = None, memory: bool = True, pipeline: float | None = None,
         hours: float | None = None) -> dict:
    """Print the plan's table; refuse (UserError, after the table) a recipe that needs more than one session
    for a fold or for the test pass unless `allow_split`. stated: (train, predict) img/s on one GPU;
    pipeline: stated training inputs/s the session's CPUs deliver (default: `pipeline_rate`); hours: a session's
    length (--session-hours; default KAGGLE_SESSION_HOURS, else 12)."""
    recipe = recipe_for(cfg, folds, tta, gpu, hours)
    card = session_gpus(gpu)[0]
    precision = "fp16"  # the train kernel always passes --mixed-precision
    if stated is not None:
        if min(stated) <= 0:
            raise UserError("--train-img-s and --predict-img-s must be more than zero")
        rates = Rates(stated[0], stated[1], f"stated on the command line (per {card})")
    else:
        rates, _ = rates_for(cfg, card, precision)
    memory_gb = train_memory_gb(cfg, precision) if memory and stated is None else None
    if pipeline is not None:
        if pipeline <= 0:
            raise UserError("--pipeline-img-s must be more than zero")
        source = "stated on the command line (--pipeline-img-s)"
    else:
        pipeline, source = pipeline_rate(cfg)
    post, post_source = post_rate(cfg, card)
    c = cost(recipe, rates, pipeline, post, post_gpu_ms(cfg, card))
    print(render(cfg, recipe, rates, c, gpu, precision, memory_gb, source, post_source), flush=True)
    why = refusal(recipe, c)
    if why and not allow_split:
        raise UserError(why)
    return {"recipe": recipe, "rates": rates, "cost": c, "memory_gb": memory_gb}

