"""The GPU path of the toolkit, measured on a machine without TensorFlow (a lent GPU with Keras on JAX).

A measurement script, not part of the package. On the synthetic Carvana-shaped set (written here at native
1918x1280): the preset's own model, loss, optimiser and learning rate (`training.train.new_model`) trained for
--steps steps on batches drawn from the toolkit's image cache (`data.pipeline.build_cache`; tf.data needs
TensorFlow, so batches are drawn in numpy), then the test images predicted as `predict` does: the fold model x
hflip TTA (`inference.ensemble.probabilities`, decode threads ahead of the model), brought to native 1918x1280,
thresholded and run-length encoded (`inference.ensemble.to_native`, `base.rle.encode`). It prints and writes
(--out) training images/s, the model's prediction images/s with TTA, and predict's end-to-end images/s.

    KERAS_BACKEND=jax python scripts/gpu_check.py --preset unet --steps 300 --out gpu-check.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def device() -> str:
    """The accelerator Keras computes on, in words."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        d = jax.devices()[0]
        return f"{d.platform}:{getattr(d, 'device_kind', d)}"
    return f"{keras.backend.backend()} on {platform.processor() or platform.machine()}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="unet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--policy", default="mixed_bfloat16", help="Keras dtype policy (bfloat16 on Ampere and newer)")
    p.add_argument("--cars", type=int, default=4)
    p.add_argument("--test", type=int, default=64)
    p.add_argument("--work", default="gpu-check")
    p.add_argument("--out", default="gpu-check.json")
    a = p.parse_args()

    import keras

    from competition.base import rle
    from competition.base.geometry import Geometry
    from competition.config import preset
    from competition.data.layout import open_dataset
    from competition.data.pipeline import build_cache
    from competition.data.synth import SynthSpec, generate
    from competition.inference.ensemble import Member, probabilities, to_native
    from competition.inference.predictor import Predictor
    from competition.inference.upsample import threshold_native
    from competition.models.runtime import dtype_policy
    from competition.scoring.metrics import dice
    from competition.training.train import new_model

    work = Path(a.work)
    started = time.perf_counter()
    generate(work / "data", SynthSpec(cars=a.cars, test=a.test, seed=3, varied=True))
    synth_s = time.perf_counter() - started
    cfg = preset(a.preset)
    ds = open_dataset(work / "data")
    geometry = Geometry(cfg.height, cfg.width, cfg.fit)
    ids = ds.train_ids
    held_out = [i for i in ids if i.startswith(ids[-1].split("_")[0])]  # the last car: never trained on
    train_ids = [i for i in ids if i not in held_out]
    cache = build_cache(ds, ids, geometry, cfg.image_interp, work / "cache")
    index = cache.index(train_ids)
    rng = np.random.default_rng(0)

    with dtype_policy(a.policy):
        keras.utils.set_random_seed(cfg.seed)
        model = new_model(cfg)
    batches = [cache.batch(rng.choice(index, cfg.batch, replace=False)) for _ in range(8)]
    batches = [(x.astype(np.float32) / 255.0, y.astype(np.float32)) for x, y in batches]
    t0 = time.perf_counter()
    model.train_on_batch(*batches[0])  # compiles
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for step in range(a.steps):
        x, y = batches[step % len(batches)]
        t = time.perf_counter()
        logs = model.train_on_batch(x, y, return_dict=True)
        losses.append(float(logs["loss"]))  # a value fetched: the step has finished on the device
        times.append(time.perf_counter() - t)
    steady = sorted(times[5:]) if len(times) > 10 else sorted(times)
    step_s = float(np.median(steady))
    train_img_s = cfg.batch / step_s

    predictor = Predictor([model], geometry, "hflip", cfg.image_interp)
    member = Member(work, a.preset, 1.0, cfg, [0], predictor)
    test_ids = ds.test_ids
    batch = cfg.eval_batch
    stacked = np.stack([predictor.load(ds.read_test_image(i), i) for i in test_ids[:batch]])
    predictor(stacked)  # compiles the prediction function
    t = time.perf_counter()
    rounds = max(1, 256 // batch)
    for _ in range(rounds):
        predictor(stacked)
    model_img_s = rounds * batch / (time.perf_counter() - t)

    rows = 0
    t = time.perf_counter()
    for image_id, probs in probabilities([member], test_ids, ds.read_test_image, ds.where_test, batch):
        native = to_native([member], probs, lambda i=image_id: ds.read_test_image(i), ds.where_test(image_id))
        rle.encode(threshold_native(native, cfg.threshold))
        rows += 1
    e2e_img_s = rows / (time.perf_counter() - t)

    scores = []
    for image_id, probs in probabilities([member], held_out, ds.read_train_image, ds.where_train, batch):
        native = to_native([member], probs, lambda i=image_id: ds.read_train_image(i), ds.where_train(image_id))
        scores.append(dice(ds.read_mask(image_id), threshold_native(native, cfg.threshold)))
    result = {
        "what": f"scripts/gpu_check.py --preset {a.preset} --steps {a.steps} --policy {a.policy}",
        "device": device(), "backend": keras.backend.backend(), "keras": keras.__version__,
        "preset": a.preset, "input": [cfg.height, cfg.width], "batch": cfg.batch, "policy": a.policy,
        "synthetic_set": {"cars": a.cars, "test": a.test, "seconds_to_write": round(synth_s, 1)},
        "train": {"steps": a.steps, "first_step_s": round(compile_s, 2), "median_step_s": round(step_s, 5),
                  "img_s": round(train_img_s, 1), "loss_first_10": round(float(np.mean(losses[:10])), 4),
                  "loss_last_10": round(float(np.mean(losses[-10:])), 4)},
        "predict": {"tta": "hflip", "batch": batch, "model_img_s": round(model_img_s, 1),
                    "end_to_end_img_s": round(e2e_img_s, 1), "test_images": rows,
                    "held_out_native_dice": round(float(np.mean(scores)), 4), "held_out_images": len(scores)},
    }
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
