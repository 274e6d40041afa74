"""Benchmark section 4. JPEG decode."""
from __future__ import annotations

from typing import Callable

from ..base.geometry import Geometry
from .common import Budget, Inputs, figure, interleaved, median, opencv_threads, section


def bench_decode(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    from ..base.images import decode_jpeg, reduction_for
    sets = {"synthetic test": [inputs.synth.read_test_image(i) for i in inputs.synth.test_ids]}
    if inputs.fixtures is not None:
        sets["real"] = [p.read_bytes() for p in sorted(inputs.fixtures.glob("*.jpg"))[:plan.test_images]]
    rows, data, figures = [], {}, []
    for label, blobs in sets.items():
        for h, w in ((96, 128), (256, 384), (640, 960)):
            geometry = Geometry(h, w, "resize")
            factor = reduction_for(geometry.inner)

            def load(reduce: int) -> Callable[[], None]:
                return lambda: [geometry.to_model(decode_jpeg(b, "bench", reduce), "area") for b in blobs]
            with opencv_threads(1):
                times = interleaved({"full": load(1), "reduced": load(factor)}, plan.rounds)
            ips = {k: len(blobs) / median(v) for k, v in times.items()}
            ratio = ips["reduced"] / ips["full"]
            data[f"{label} {h}x{w}"] = {"images": len(blobs), "reduction": factor, "images_per_s": ips, "raw_s": times}
            rows.append([f"{label} ({len(blobs)})", f"{h}x{w}", f"1/{factor}", f"{ips['full']:.0f}",
                         f"{ips['reduced']:.0f}", f"**{ratio:.1f}x**"])
            if label == "synthetic test" and (h, w) == (640, 960) or label == "real" and (h, w) == (96, 128):
                figures.append(figure(f"JPEG decode + fit to {h}x{w}, {label} 1918x1280",
                                      f"{ips['reduced']:.0f} images/s (1/{factor} decode)",
                                      f"{ips['full']:.0f} images/s (full decode)", ratio, "x faster", "(none)", None))
    sec = section("4. JPEG decode of 1918x1280 images to the model's input (1 thread)",
                  f"`images.decode_jpeg` full vs reduced by `reduction_for(size)` (libjpeg's scaled IDCT), "
                  f"each followed by `Geometry.to_model` (area resize) - exactly `Predictor.load`. OpenCV on one "
                  f"thread; median of {plan.rounds} rounds over all images.",
                  ["images", "model size", "reduction", "full img/s", "reduced img/s", "speed-up"], rows, data=data)
    return sec, figures
