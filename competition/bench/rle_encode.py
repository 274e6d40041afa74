"""Benchmark section 1. RLE encode."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..base import rle
from .common import Budget, Inputs, figure, interleaved, median, section


def bench_rle(inputs: Inputs, plan: Budget) -> tuple[dict, list[dict]]:
    sets = {"real": inputs.real_masks, "synthetic": inputs.synth_masks}
    rows, data, figures = [], {}, []
    for label, masks in sets.items():
        if not masks:
            continue
        items = list(masks.values())
        for image_id, m in masks.items():
            if rle.encode(m) != rle.encode_idiom(m):
                raise AssertionError(f"rle.encode differs from the padded idiom on {label} mask {image_id}")

        def run(fn: Callable) -> Callable[[], None]:
            def every_mask() -> None:
                for m in items:
                    fn(m)  # results dropped at once: no memory growth across masks
            return every_mask
        times = interleaved({"ours": run(rle.encode), "idiom": run(rle.encode_idiom),
                             "copy": run(np.copy)}, plan.rounds)
        ms = {k: 1e3 * median(v) / len(items) for k, v in times.items()}
        ratio = ms["idiom"] / ms["ours"]
        data[label] = {"masks": len(items), "ms_per_mask": ms, "raw_s": times, "byte_identical": True}
        rows.append([f"{label} ({len(items)} masks)", f"{ms['ours']:.3f}", f"{ms['idiom']:.3f}",
                     f"{ms['copy']:.3f}", f"**{ratio:.1f}x**"])
        figures.append(figure(f"RLE encode, 1918x1280 {label} masks", f"{ms['ours']:.2f} ms/mask",
                              f"{ms['idiom']:.2f} ms/mask (padded numpy idiom)", ratio, "x faster", ">= 4x",
                              ratio >= 4))
    sec = section("1. RLE encode of native 1918x1280 masks",
                  f"`rle.encode` vs `rle.encode_idiom` (`np.concatenate([[0], m.flatten(), [0]])`, `np.where`, "
                  f"lengths by difference, `' '.join`), uint8 0/1 masks; every output asserted byte-identical "
                  f"before timing. Each round encodes every mask once with each; median of {plan.rounds} rounds. "
                  f"`copy` is one `np.copy` of the mask: the physical floor.",
                  ["masks", "ours ms/mask", "idiom ms/mask", "copy ms/mask", "speed-up"], rows, data=data)
    return sec, figures
