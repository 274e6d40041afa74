"""Benchmarks: the --quick run writes well-formed results.json and RESULTS.md (never asserts on speed)."""
import json

from competition.bench import run_bench
from competition.bench.common import QUICK
from competition.config import preset


def test_quick_bench_writes_results_and_report(tmp_path, fixtures_dir, monkeypatch):
    monkeypatch.setenv("CARVANA_FIXTURES", str(fixtures_dir))
    out = tmp_path / "bench"
    returned = run_bench(out, quick=True)

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["quick"] is True and results["fixtures"] == str(fixtures_dir)
    assert results["machine"]["cpu"] and results["machine"]["logical_cores"] >= 1
    assert len(results["sections"]) == 10
    for sec in results["sections"]:
        assert sec["rows"] and all(len(row) == len(sec["columns"]) for row in sec["rows"]), sec["title"]
    assert results["headline"]
    for fig in results["headline"]:
        assert fig["ratio"] > 0 and fig["met"] in (True, False, None), fig
    rle = next(s for s in results["sections"] if s["title"].startswith("1."))
    assert all(d["byte_identical"] for d in rle["data"].values())
    writer = next(s for s in results["sections"] if s["title"].startswith("6."))
    assert [r["rows"] for r in writer["data"]["runs"]] == list(results["plan"]["writer_rows"])
    crops = next(s for s in results["sections"] if s["title"].startswith("8."))
    d = crops["data"]
    assert d["crop"] == [256, 256] and d["frame"] == [320, 480]  # --quick: a small frame
    assert d["t4_train_img_s"] > 0 and "ESTIMATE" in d["t4_source"]
    assert d["ratio_per_core_to_t4"] == d["images_per_s"]["memory, 1 thread"] / d["t4_train_img_s"]
    [xla_preset] = QUICK.xla_presets
    xla = next(s for s in results["sections"] if s["title"].startswith("9."))["data"][xla_preset]
    assert xla["batch"] == 2 and xla["size"] == list(preset(xla_preset).train_size) and xla["speedup"] > 0
    assert isinstance(xla["train_chooses_xla"], bool) and xla["chosen_speed_vs_without"] > 0
    assert xla["first_loss_gap"] < 1e-4 * xla["first_loss"]["Keras default (no XLA on CPU)"]  # same arithmetic
    refine = next(s for s in results["sections"] if s["title"].startswith("10."))["data"]
    coarse = refine["coarse outline"]
    assert coarse["images"] == QUICK.real_masks and coarse["dice_vs_true_mask"]["refined"] > coarse["dice_vs_true_mask"]["plain"]
    nets = refine.pop("refiner net")
    filt = refine.pop("filter vs before issue 36")  # today's filter and the former one, timed side by side
    assert filt["images"] == QUICK.real_masks and filt["guide"] == [640, 959] and filt["equal_pixels"] > 0.9999
    assert filt["ms_per_image"]["today"] > 0 and filt["ms_per_image"]["baseline"] > 0
    assert filt["met"] == (filt["ms_per_image"]["today"] <= filt["target_ms"] == 30)
    assert sum(f["figure"].startswith("Guided filter on cpu's") and f["target"].startswith("<= 30 ms")
               for f in results["headline"]) == 1
    assert all(d["ms_per_image"]["refined"] > 0 and d["ms_per_image"]["plain"] > 0 for d in refine.values())
    from competition.models.runtime import cpu_has_bf16
    assert sorted(nets) == (["bfloat16", "float32"] if cpu_has_bf16() else ["float32"])  # the policies a run uses
    assert all(d["images"] == QUICK.real_masks and d["ms_per_image"]["net"] > 0 and d["ms_per_image"]["guided"] > 0
               for d in nets.values())
    assert sum("Refiner net + guided refinement" in f["figure"] for f in results["headline"]) == len(nets)

    report = (out / "RESULTS.md").read_text()
    assert report.startswith("# Benchmark results (--quick)")
    assert "| figure | ours | baseline (same run) | ratio | target | met |" in report
    assert "ESTIMATE" in report and results["machine"]["cpu"] in report
    for sec in results["sections"]:
        assert f"## {sec['title']}" in report


def test_model_throughput_trains_a_crop_preset_on_its_crops_and_predicts_whole_frames(monkeypatch):
    """Section 7 builds a crop preset's model as train does (any input size): a fixed-size model refused the crop."""
    from dataclasses import replace

    from competition import config
    from competition.bench.common import QUICK
    from competition.bench.models import bench_models
    monkeypatch.setitem(config.PRESETS, "tiny-crop", dict(config.PRESETS["tiny"], crop=(16, 16)))
    sec, _ = bench_models(replace(QUICK, presets=("tiny-crop",)))
    row = next(r for r in sec["rows"] if r[0] == "tiny-crop")
    assert row[1] == "32x48 (trains on 16x16 crops)" and float(row[3]) > 0 and float(row[4]) > 0
    assert sec["data"]["tiny-crop"]["size"] == [32, 48]
