"""Benchmark section 5. Predict end to end."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..base.geometry import Geometry
from ..config import preset
from ..models import build_model
from ..models.runtime import build_optimizer
from .common import Budget, Inputs, figure, interleaved, median, opencv_threads, section


PREDICT_SIZE = (160, 240)  # the figure must not move with the demo preset's size
TARGETS = {"none": 0.8, "hflip": 0.9}  # issue 36: end to end / model-only, without TTA and with hflip


def _train_briefly(model, cfg, geometry: Geometry, inputs: Inputs, epochs: int) -> str:
    """Fit the net a few epochs on the training photos (the real fixtures when found) so that its masks, and so the
    RLE strings the writer compresses, are the size of a real submission's: a net with random weights speckles its
    masks into RLE strings ten times longer than any trained net's, and the post-processing and the writer's gzip
    then cost more than the model. Its time per image does not depend on its weights. Returns the weights in
    words; `epochs` 0 (--quick, whose figures are not meant to be read) leaves them as they are."""
    from ..inference.predictor import Predictor
    if epochs == 0:
        return "seeded random weights, untrained (--quick): speckled masks, figures not meant to be read"
    real = bool(inputs.real_masks)
    source = inputs.train if real else inputs.synth
    masks = inputs.real_masks or inputs.synth_masks
    load = Predictor([model], geometry, "none", cfg.image_interp).load
    x = np.stack([load(source.read_train_image(i), i) for i in masks]).astype(np.float32) / 255.0
    y = np.stack([geometry.to_model(m[..., None].astype(np.float32), "area") for m in masks.values()])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    build_optimizer(model)  # one trace of the train step, as train.compile_model does
    model.fit(x, y, batch_size=cfg.batch, epochs=epochs, shuffle=False, verbose=0)
    return (f"seeded, then trained {epochs} epochs on {len(masks)} {'real' if real else 'synthetic'} training "
            f"photos so that its masks, and their RLE strings, are the size of a real submission's (the true "
            f"masks': about 9,000 characters; random weights speckle them into ~120,000, and the post-processing "
            f"and the writer's gzip then outweigh the model)")


def _test_sets(inputs: Inputs, plan: Budget) -> dict[str, tuple[list[str], Callable[[str], bytes]]]:
    """The test JPEGs predicted: the synthetic ones, and the real fixtures' when found: label -> (ids, read)."""
    synth = inputs.synth
    sets = {"synthetic": (synth.test_ids, synth.read_test_image)}
    if inputs.fixtures is not None:
        paths = {p.stem: p for p in sorted(inputs.fixtures.glob("*.jpg"))[:plan.test_images]}
        sets["real"] = (list(paths), lambda i: paths[i].read_bytes())
    return sets


def bench_predict(inputs: Inputs, plan: Budget, work: Path) -> tuple[dict, list[dict]]:
    import keras

    from ..inference.ensemble import Member, probabilities
    from ..inference.predictor import Predictor, ordered_map
    from ..inference.upsample import postprocess
    from ..inference.writer import SubmissionWriter
    # The pipeline itself (guided refinement: section 10) around a fixed net, demo's at its former 160x240.
    cfg = preset("demo", refine="none", height=PREDICT_SIZE[0], width=PREDICT_SIZE[1])
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    weights = _train_briefly(model, cfg, geometry, inputs, plan.predict_fit_epochs)
    batch = cfg.batch
    synth = inputs.synth
    rows, data, figures = [], {}, []
    for label, (ids, read) in _test_sets(inputs, plan).items():
        for tta in ("hflip", "none"):
            predictor = Predictor([model], geometry, tta, cfg.image_interp)
            loaded = [predictor.load(read(i), i) for i in ids]
            batches = [np.stack(loaded[k:k + batch]) for k in range(0, len(loaded), batch)]
            probs = np.concatenate([predictor(b) for b in batches])  # also the warm-up
            rle_chars = float(np.mean([len(postprocess(p, geometry, cfg.threshold)) for p in probs]))

            def model_only() -> None:
                for b in batches:
                    predictor(b)

            def end_to_end() -> None:
                writer = SubmissionWriter(work / "predict.csv.gz", ids, {"bench": tta})

                def post(item: tuple[str, list[np.ndarray]]) -> tuple[str, str]:
                    return item[0], postprocess(item[1][0], geometry, cfg.threshold)
                member = Member(work, "demo", 1.0, cfg, [0], predictor)  # one run: predict's one-member ensemble
                stream = probabilities([member], writer.remaining, read, str, batch)
                with ThreadPoolExecutor(2, thread_name_prefix="post") as pool:
                    for image_id, rle_string in ordered_map(pool, post, stream, ahead=2 * batch):
                        writer.add(image_id, rle_string)
                writer.finish()

            def cpu_side() -> None:  # everything but the model, on one thread
                with opencv_threads(1):
                    for image_id, prob in zip(ids, probs):
                        predictor.load(read(image_id), image_id)
                        postprocess(prob, geometry, cfg.threshold)
            times = interleaved({"model": model_only, "end_to_end": end_to_end, "cpu_side": cpu_side},
                                 plan.predict_rounds)
            ips = {k: len(ids) / median(v) for k, v in times.items()}
            side_ms = 1e3 / ips["cpu_side"]
            ratio = ips["end_to_end"] / ips["model"]
            data[f"{label} {tta}"] = {"images": len(ids), "batch": batch, "images_per_s": ips, "raw_s": times,
                                      "cpu_side_ms_per_image_1_thread": side_ms, "mean_rle_chars": rle_chars}
            rows.append([f"{label} ({len(ids)})", tta, f"{ips['end_to_end']:.1f}", f"{ips['model']:.1f}",
                         f"**{ratio:.2f}**", f"{1e3 / ips['model']:.1f}", f"{side_ms:.1f}", f"{rle_chars:,.0f}"])
            figures.append(figure(f"Predict end to end, {label} JPEGs, TTA {tta} ({cfg.height}x{cfg.width} demo U-Net)",
                                  f"{ips['end_to_end']:.1f} images/s",
                                  f"{ips['model']:.1f} images/s (model on pre-decoded batches)", ratio,
                                  "of model-only", f">= {TARGETS[tta]}", ratio >= TARGETS[tta]))
    sec = section("5. Predict end to end vs the model alone",
                  f"Native 1918x1280 test JPEGs ({len(synth.test_ids)} synthetic, and real fixture JPEGs when "
                  f"found); fixed `demo` U-Net ({cfg.height}x{cfg.width}, depth {cfg.depth}, {cfg.filters} filters, "
                  f"batch norm; {weights}; no guided refinement), batch {batch}. End to end: `probabilities` (read + "
                  f"reduced decode + fit in a thread pool ahead of the model; the model in its own thread, two "
                  f"batches ahead of the caller) -> `Predictor` -> `postprocess` in "
                  f"a 2-thread pool -> `SubmissionWriter` (.csv.gz). Model-only: the same `Predictor` on the same "
                  f"images pre-decoded into batches. CPU side: read + decode + fit + post-process of every image "
                  f"on one thread, no model. Median of {plan.predict_rounds} alternating rounds.",
                  ["images", "TTA", "end-to-end img/s", "model-only img/s", "ratio", "model ms/img",
                   "CPU side ms/img (1 thread)", "mean RLE chars/img"], rows,
                  notes=["On a CPU-only machine the decode and post-processing threads compete with the model for "
                         "the same cores (TensorFlow already uses all of them), so they cannot hide behind it; "
                         "each image costs about model time + CPU-side time / cores. On an accelerator the model "
                         "runs elsewhere and the CPU side only has to keep up (it must stay under the model's "
                         "time per image x cores)."],
                  data=data)
    return sec, figures
