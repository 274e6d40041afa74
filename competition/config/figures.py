"""Every figure a user reads about a preset, in one place: what it is for, the hardware, the time a fold, the test
pass, the score, each marked measured or estimate, with the data and machine and the docs/results.md section that
holds it. `train --help` (OFFERED), the README's table and docs/guide.md's are made from it; tests/test_figures.py
keeps the pages equal to it and the GPU estimates equal to what `plan` computes today.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One figure: its value as a user reads it, whether it was measured, on what data and hardware."""

    value: str
    measured: bool
    on: str

    def __str__(self) -> str:
        return f"{self.value} ({'measured' if self.measured else 'estimate'}; {self.on})"

    @property
    def short(self) -> str:
        return f"{self.value} ({'measured' if self.measured else 'estimate'})"


@dataclass(frozen=True)
class PresetFigures:
    purpose: str
    hardware: str
    fold: Figure        # the time to train one fold (the U-Net and the refiner it asks for)
    test_pass: Figure   # the time to predict the test set (100,064 photos on the real data)
    score: Figure       # Kaggle's dice at 1918x1280
    section: str        # docs/results.md's section that holds the measurements (or docs/performance.md's)


_XEON = "2-core Intel Xeon with AVX512-BF16/AMX, idle"
FIGURES: dict[str, PresetFigures] = {
    "demo": PresetFigures(
        "trying the toolkit on synthetic cars", "any CPU",
        Figure("the whole `make demo` in 3-5 min", True, f"2 min 53 s on a {_XEON}; 5 min 7 s on a 2-core AMD EPYC "
                                                        "with its first-run XLA probe"),
        Figure("seconds", True, "the synthetic test set of 8 photos"),
        Figure("0.971", True, "held-out synthetic cars, each >= 0.968"),
        "results.md#demo-the-synthetic-cars"),
    "cpu": PresetFigures(
        "real photos without a GPU", "2 CPU cores; bfloat16 where the CPU has it",
        Figure("1.7 h", False, "a fold of the 5,088 photos (4,070 + 1,018) on a 2-core AMD EPYC: `plan --accelerator "
                               "here` from step times measured there; fold 0 of the 497 real photos took 17 min "
                               f"(measured on a {_XEON}); `train --budget` fits a fold to any time"),
        Figure("5.6 h", False, "the 100,064 test photos through 5 folds, flip TTA and the refiner net on those 2 "
                               "cores: `plan --accelerator here`, from predict measured on 200 real photos"),
        Figure("0.9914", True, "fold 0 of the 497 real photos; 0.9923 with `--budget 20m`; 0.9903 out of fold with "
                               "the 2,000-step refiner of 2026-11-29"),
        "results.md#cpu-the-497-real-photos-beside-the-project-on-a-2-core-cpu"),
    "unet": PresetFigures(
        "the Kaggle recipe, 640x960", "Kaggle's T4 x2, float16",
        Figure("1.8 h", False, "`plan --preset unet --folds 0`: FLOPs at an assumed 20% of a T4's peak"),
        Figure("3.5 h", False, "`plan --preset unet`: 5 folds, flip TTA, both T4s"),
        Figure("~0.996", False, "a plain U-Net at high resolution, by the 4th-place team's slides"),
        "performance.md"),
    "full": PresetFigures(
        "full resolution, 1024x1024 crops of 1280x1920", "Kaggle's T4 x2, float16",
        Figure("1.4 h", False, "`plan --preset full`: 7.0 h for 5 folds, the CPU pipeline the limit"),
        Figure("4.1 h", False, "`plan --preset full`: 5 folds, flip TTA, both T4s"),
        Figure("~0.997", False, "the leaders' full-resolution U-Nets reached 0.9970-0.9972"),
        "performance.md"),
}


def offered_line(name: str) -> str:
    """The preset's line in `train --help`."""
    f = FIGURES[name]
    return f"{f.purpose}: {f.hardware}; a fold {f.fold.short}; score {f.score.short}"


def readme_table() -> str:
    """The README's table of presets (and docs/guide.md's), between their markers."""
    rows = ["| preset | for | hardware | time a fold | test pass | score (Kaggle's dice, 1918x1280) |",
            "|---|---|---|---|---|---|"]
    for name, f in FIGURES.items():
        label = f"`{name}`" + (" (default)" if name == "unet" else "")
        rows.append(f"| {label} | {f.purpose} | {f.hardware} | {f.fold} | {f.test_pass} | {f.score} |")
    return "\n".join(rows)
