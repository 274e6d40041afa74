"""Benchmarks: every figure is a ratio against a baseline measured side by side in the same run.

`run_bench` times the toolkit's real code against the naive way of doing the same job, alternating
the two within every round (so a noisy neighbour slows both alike) and keeping the median of several
rounds. It writes `results.json` (every raw timing) and `RESULTS.md` (the tables, the method and the
machine). `--quick` runs the same sections on fewer items in about a minute on 2 cores.
"""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from .. import __version__
from ..base.console import say, stderr_captured
from ..base.fileio import write_json, write_text
from .common import FULL, QUICK, prepare
from .crops import bench_crops
from .input_pipeline import bench_pipeline
from .jpeg_decode import bench_decode
from .models import bench_models
from .postprocess import bench_postprocess
from .predict_e2e import bench_predict
from .refinement import bench_refinement
from .rle_encode import bench_rle
from .training_step import bench_training_step
from .writer_memory import bench_writer


# --- the run --------------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model, cores, memory and library versions of this run."""
    import keras
    import tensorflow as tf
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = _meminfo_gb()
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    return {"cpu": cpu, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": mem, "os": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "toolkit": __version__, "commit": commit,
            "gpu": [d.name for d in tf.config.list_physical_devices("GPU")], "load_average": _load_average()}


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count means something else was running."""
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _meminfo_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices without the absl lines TF_CPP_MIN_LOG_LEVEL cannot hide."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with stderr_captured():  # the C++ lines TF_CPP_MIN_LOG_LEVEL cannot hide
        import tensorflow as tf
        tf.config.list_physical_devices()
        tf.constant(0)


def run_bench(out: Path, quick: bool) -> dict:
    """Run every benchmark (fewer items with `quick`), write out/results.json and out/RESULTS.md."""
    quiet_tensorflow()
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = _load_average()
    sections, figures = [], []
    with tempfile.TemporaryDirectory(prefix="competition-bench-") as tmp:
        work = Path(tmp)
        say(f"bench{' --quick' if quick else ''}: preparing inputs")
        inputs = prepare(plan, work)
        steps = [("RLE encode", lambda: bench_rle(inputs, plan)),
                 ("post-processing", lambda: bench_postprocess(inputs, plan)),
                 ("training input pipeline", lambda: bench_pipeline(inputs, plan, work)),
                 ("JPEG decode", lambda: bench_decode(inputs, plan)),
                 ("predict end to end", lambda: bench_predict(inputs, plan, work)),
                 ("submission writer memory", lambda: bench_writer(inputs, plan, work)),
                 ("model throughput", lambda: bench_models(plan)),
                 ("crop input pipeline", lambda: bench_crops(inputs, plan)),
                 ("training step", lambda: bench_training_step(plan)),
                 ("guided refinement", lambda: bench_refinement(inputs, plan))]
        for label, step in steps:
            t0 = time.perf_counter()
            sec, figs = step()
            sec["seconds"] = round(time.perf_counter() - t0, 1)
            sections.append(sec)
            figures.extend(figs)
            say(f"bench: {label} done in {sec['seconds']:.1f} s")
        fixtures = str(inputs.fixtures) if inputs.fixtures else None
    results = {"quick": quick, "plan": asdict(plan), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "seconds": round(time.perf_counter() - started, 1), "machine": machine(),
               "load_average_before": load_before, "fixtures": fixtures, "headline": figures, "sections": sections,
               "command": "python -m competition bench" + (" --quick" if quick else "")}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_text(out / "RESULTS.md", render_markdown(results))
    say(f"bench: wrote {out / 'results.json'} and {out / 'RESULTS.md'} in {results['seconds']:.0f} s")
    return results


# --- report ---------------------------------------------------------------------------------------
def _table(columns: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def headline_table(results: dict) -> str:
    """The headline figures as a Markdown table (the README's Performance section shows it)."""
    rows = []
    for f in results["headline"]:
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        rows.append([f["figure"], f["ours"], f["baseline"], f"**{f['ratio']:g}** {f['ratio_unit']}", f["target"], met])
    return "\n".join(_table(["figure", "ours", "baseline (same run)", "ratio", "target", "met"], rows))


def render_markdown(results: dict) -> str:
    """RESULTS.md: machine, headline table, then each section's method and table."""
    m = results["machine"]
    lines = [f"# Benchmark results{' (--quick)' if results['quick'] else ''}", "",
             f"`{results['command']}` on {results['date']}, {results['seconds']:.0f} s in all. Every ratio "
             f"compares against a baseline measured in the same run, alternating with it round by round.", "",
             f"**Machine:** {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
             f"{m['memory_gb']} GB RAM, GPU: {', '.join(m['gpu']) or 'none'}; {m['os']}. "
             f"Python {m['python']}, numpy {m['numpy']}, OpenCV {m['opencv']}, TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}, toolkit {m['toolkit']}" + (f" at {m['commit']}" if m["commit"] else "") + ". "
             f"Load average (1/5/15 min) before: {results['load_average_before']}, after: {m['load_average']} "
             f"(near or above the core count means other work shared the CPU; the ratios, measured "
             f"side by side, suffer less from it than the absolute numbers).", "",
             f"**Inputs:** real masks and JPEGs from `{results['fixtures']}`" if results["fixtures"] else
             "**Inputs:** synthetic only - the real fixtures were not found (set CARVANA_FIXTURES).", "",
             "## Headline", "", headline_table(results), ""]
    for sec in results["sections"]:
        lines += [f"## {sec['title']}", "", f"*Method:* {sec['method']} ({sec['seconds']} s)", ""]
        lines += _table(sec["columns"], sec["rows"])
        lines += [""] + [f"- {n}" for n in sec["notes"]] + ([""] if sec["notes"] else [])
    lines += ["Rerun: `make bench` (full, about 20 minutes on 2 cores) or `python -m competition bench --quick` "
              "(about a minute on 2 cores). Raw timings of every round are in `results.json`.", ""]
    return "\n".join(lines)

