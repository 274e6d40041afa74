"""`plan`: the arithmetic on a stated throughput, its sources, and its refusal of what one session cannot hold."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from competition.costs import plan as plan_mod
from competition.config import preset
from competition.base.errors import UserError
from competition.costs.plan import Rates, cost, plan, recipe_for, refusal, scaled_measurement
from competition.kaggle.machines import TIME_MARGIN_SECONDS

ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL = 5088 - 1018, 1018  # Kaggle's 5,088 training images in 5 folds: 1,018 (5088 / 5, rounded) held out


def test_hours_sessions_shards_and_quota_on_a_stated_throughput():
    recipe = recipe_for(preset("unet"), None, "hflip", "l4")  # 5 folds, up to 40 epochs, one GPU (an L4)
    assert (recipe.train_images, recipe.val_images, recipe.tta_passes, recipe.gpus) == (TRAIN, VAL, 2, 1)
    c = cost(recipe, Rates(10.0, 20.0, "stated"))
    epoch_s = TRAIN / 10 + VAL / 20                                    # 407 s training + 50.9 s validating
    assert c["epoch_s"] == pytest.approx(457.9)
    assert c["fold_train_h"] == pytest.approx(40 * epoch_s / 3600)     # 5.09 h
    assert c["fold_finish_h"] == pytest.approx(VAL * 3 / 20 / 3600)    # OOF pass + 2 TTA passes of scoring
    assert c["fold_sessions"] == 1 and c["train_kernels"] == 5
    assert c["predict_h"] == pytest.approx(100_064 * 2 * 5 / 20 / 3600)  # 13.9 h > 11.75 h: two shards
    assert c["shards"] == 2
    total = 5 * (40 * epoch_s / 3600 + VAL * 3 / 20 / 3600) + 100_064 * 2 * 5 / 20 / 3600
    assert c["total_h"] == pytest.approx(total) and total == pytest.approx(39.55, abs=0.01)
    assert c["quota_fraction"] == pytest.approx(total / 30) and c["weeks"] == 2


def test_two_gpus_speed_training_and_the_test_pass_up():
    """T4 x2: MirroredStrategy trains on both; predict puts a copy of the models on each (batches in turn)."""
    one = cost(recipe_for(preset("unet"), [0], "none", "l4"), Rates(10.0, 20.0, "stated"))
    two = cost(recipe_for(preset("unet"), [0], "none", "t4x2"), Rates(10.0, 20.0, "stated"))
    assert two["speedup"] == pytest.approx(1.9)
    assert two["fold_train_h"] == pytest.approx(one["fold_train_h"] / 1.9)
    assert one["predict_h"] == pytest.approx(100_064 / 20 / 3600)
    assert two["predict_h"] == pytest.approx(one["predict_h"] / 1.9)


def test_the_session_length_sets_sessions_and_shards(monkeypatch):
    """--session-hours (or KAGGLE_SESSION_HOURS) is what a fold and the test pass must fit in."""
    cfg = preset("unet")
    rates = Rates(10.0, 20.0, "stated")
    long = cost(recipe_for(cfg, [0], "none", "l4"), rates)
    short = cost(recipe_for(cfg, [0], "none", "l4", hours=1.0), rates)
    assert long["fold_sessions"] == 1 and short["fold_sessions"] == math.ceil(
        long["fold_train_h"] / (1.0 - TIME_MARGIN_SECONDS["train"] / 3600))
    assert short["shards"] > long["shards"] == 1
    monkeypatch.setenv("KAGGLE_SESSION_HOURS", "1")
    assert cost(recipe_for(cfg, [0], "none", "l4"), rates)["fold_sessions"] == short["fold_sessions"]


def test_training_goes_at_the_slower_of_the_gpus_and_the_cpu_pipeline():
    recipe = recipe_for(preset("full"), [0], "none", "t4x2")
    gpus = cost(recipe, Rates(30.0, 40.0, "stated"))                  # 2 GPUs train 57 img/s
    capped = cost(recipe, Rates(30.0, 40.0, "stated"), pipeline_img_s=37.2)
    assert not gpus["cpu_bound"] and gpus["train_img_s"] == pytest.approx(57.0)
    assert capped["cpu_bound"] and capped["train_img_s"] == 37.2 and capped["gpu_train_img_s"] == pytest.approx(57.0)
    assert capped["epoch_s"] == pytest.approx(TRAIN / 37.2 + VAL / (40 * 1.9))  # validation is not capped
    assert capped["predict_h"] == gpus["predict_h"]
    assert cost(recipe, Rates(30.0, 40.0, "stated"), pipeline_img_s=100.0)["epoch_s"] == gpus["epoch_s"]
    # the measured per-core rate covers full-resolution decodes only
    rate, source = plan_mod.pipeline_rate(preset("full"))
    assert rate == pytest.approx(4 * plan_mod.PIPELINE_PER_CORE["img_s"]) and "section 8" in source
    assert plan_mod.pipeline_rate(preset("unet-1280"))[0] == rate
    rate, source = plan_mod.pipeline_rate(preset("unet"))              # 640x960 decodes at 1/2
    assert rate is None and "1/2" in source


def test_the_test_pass_goes_at_the_slower_of_one_gpu_and_the_post_processing(capsys):
    """Post-processing runs once per image (after TTA and folds) on predict's CPU threads; refining costs more."""
    recipe = recipe_for(preset("demo", refine="guided"), [0, 1], "hflip", "l4")
    fast_gpu = Rates(10.0, 2000.0, "stated")
    gpu_h = 100_064 * 2 * 2 / 2000 / 3600
    plain = cost(recipe, fast_gpu, post_img_s=plan_mod.post_rate(preset("unet"))[0])
    refined = cost(recipe, fast_gpu, post_img_s=plan_mod.post_rate(preset("demo", refine="guided"))[0])
    assert plain["gpu_predict_h"] == refined["gpu_predict_h"] == pytest.approx(gpu_h)
    assert not plain["predict_cpu_bound"] and plain["predict_h"] == pytest.approx(gpu_h)
    post_h = 100_064 * plan_mod.POSTPROCESS_MS["guided"] / 1e3 / plan_mod.POST_THREADS / 3600
    assert refined["predict_cpu_bound"] and refined["predict_h"] == pytest.approx(post_h) and post_h > gpu_h
    assert cost(recipe, fast_gpu)["predict_h"] == pytest.approx(gpu_h)  # no post rate given: not capped
    from competition.config import REFINES
    assert set(plan_mod.POSTPROCESS_MS) == set(REFINES)  # every refinement a run can ask for is costed
    # a refinement's cost grows with its guide: a 640x960 model is guided by the native photo (16x demo's 1/4 decode)
    small = plan_mod.post_rate(preset("demo", refine="guided"))[0]
    big = plan_mod.post_rate(preset("unet", refine="guided"))[0]
    assert small == pytest.approx(2e3 / plan_mod.POSTPROCESS_MS["guided"])
    assert big == pytest.approx(2e3 / (2 + 25 * 4 * 4), rel=0.01)
    net = plan_mod.post_rate(preset("demo", refine="net"))  # one image at a time: the net's lock
    assert net[0] == pytest.approx(1e3 / plan_mod.POSTPROCESS_MS["net"]) and "1 post-processing thread" in net[1]
    plan_mod.plan(preset("demo", refine="guided"), [0, 1], "hflip", "l4", stated=(10.0, 2000.0))
    out = capsys.readouterr().out
    assert "(**CPU-bound**)" in out and "refine=guided" in out


def test_on_a_gpu_session_the_refiner_nets_pass_is_the_gpus_and_the_cpu_threads_do_the_guided_filter(capsys):
    import keras

    from competition.models.refiner import CHANNELS, DILATIONS, refiner_flops
    c = CHANNELS  # by hand: conv0 (4 -> c), the dilated 3x3s (c -> c), the correction (c -> 1), the logit pick (4 -> 1)
    assert refiner_flops(40, 56) == 2.0 * 40 * 56 * (9 * 4 * c + len(DILATIONS) * 9 * c * c + c + 4)
    cfg = preset("demo", refine="net")
    cpu = plan_mod.post_rate(cfg)[0]
    rate, how = plan_mod.post_rate(cfg, "T4")
    guided = plan_mod.post_rate(preset("demo", refine="guided"))[0]
    gpu_ms = plan_mod.gpu_refiner_ms((320, 480), "T4")[0]
    assert plan_mod.REFINER_CALL_MS < gpu_ms < 20  # 3.7 GFLOP: a few ms on a T4 at the assumed efficiency
    # each thread waits for its own image's pass on the card
    assert rate == pytest.approx(2e3 / (plan_mod.POSTPROCESS_MS["guided"] + gpu_ms)) and "ESTIMATE" in how
    assert 5 * cpu < rate < guided
    recipe, fast = recipe_for(cfg, [0], "none", "l4"), Rates(10.0, 2000.0, "stated")
    card_h = cost(recipe, fast, post_gpu_ms=plan_mod.post_gpu_ms(cfg, "T4"))["gpu_predict_h"]
    assert card_h == pytest.approx(100_064 / 2000 / 3600 + 100_064 * gpu_ms / 3.6e6)  # the card runs both
    assert plan_mod.post_gpu_ms(cfg, None) == plan_mod.post_gpu_ms(preset("demo", refine="guided"), "T4") == 0.0
    assert plan_mod.gpu_refiner_ms((320, 480), "T4")[0] > plan_mod.gpu_refiner_ms((320, 480), "H100")[0]
    big_guide = plan_mod.post_rate(preset("unet", refine="net"), "T4")  # native guide: 16x the pixels
    assert big_guide[0] < rate
    plan_mod.plan(cfg, [0, 1], "hflip", "l4", stated=(10.0, 2000.0))
    assert "refiner net" in capsys.readouterr().out


def test_refusal_names_what_does_not_fit_and_allow_split_plans_it(capsys):
    cfg = preset("unet")
    with pytest.raises(UserError, match=r"test pass needs 13\.9 h .*11\.75 h.*--allow-split to plan 2 shards"):
        plan(cfg, None, "hflip", "l4", stated=(10.0, 20.0))
    assert "| predict shards | 2 |" in capsys.readouterr().out  # the table is printed before the refusal
    result = plan(cfg, None, "hflip", "l4", allow_split=True, stated=(10.0, 20.0))
    assert result["cost"]["shards"] == 2
    # 100 epochs of 457.9 s = 12.7 h: more than the 11.33 h a train session gives (12 h less 40 min)
    long = preset("unet", epochs=100)
    with pytest.raises(UserError, match=r"one fold of unet needs 12\.7 h .*11\.33 h.*2 resumed sessions per fold"):
        plan(long, [0], "none", "l4", stated=(10.0, 20.0))
    split = plan(long, [0], "none", "l4", allow_split=True, stated=(10.0, 20.0))
    assert split["cost"]["train_kernels"] == 2
    # what a train kernel's default budget (the session as a cap) makes of it: the epochs 95% of 11.33 h holds
    within = plan_mod.epochs_within(split["cost"], 11 * 3600 + 20 * 60)
    assert within == math.floor((0.95 * 40800 - split["cost"]["fold_finish_h"] * 3600) / split["cost"]["epoch_s"])
    assert f"the session as a cap) plans {within} of its 100 epochs to end in one session |" in capsys.readouterr().out
    fits = plan(cfg, [0, 1], "hflip", "l4", stated=(10.0, 20.0))  # 2 folds: 5.6 h of test pass, one session
    assert "resumed sessions; a train kernel's default budget (the session as a cap) keeps the preset's 40 epochs |" \
        in capsys.readouterr().out
    assert refusal(fits["recipe"], fits["cost"]) is None and fits["cost"]["shards"] == 1


def test_a_measurement_on_another_card_is_scaled_by_peak_and_says_so():
    m = {"device": "H100", "train_img_s": 98.9, "predict_img_s": 197.8, "precision": "fp16", "batch": 8}
    r = scaled_measurement(m, "T4")
    assert r.train_img_s == pytest.approx(98.9 * 65 / 989) and r.predict_img_s == pytest.approx(197.8 * 65 / 989)
    assert "measured on H100" in r.source and "scaled to T4 by peak fp16 65 / 989" in r.source
    assert "scaled" not in scaled_measurement({**m, "device": "T4"}, "T4").source


def test_estimates_say_they_are_estimates_and_use_a_measured_calibration(monkeypatch):
    cfg = preset("demo")
    train_flops, frame_flops = plan_mod.model_flops(cfg)
    assert train_flops == frame_flops > 0  # no crop: the training input is the frame
    rates, _ = plan_mod.rates_for(cfg, "T4", "fp16")
    assert "ESTIMATE" in rates.source and "20% ASSUMED" in rates.source
    assert rates.predict_img_s == pytest.approx(65e12 * 0.2 / frame_flops)
    assert rates.train_img_s == pytest.approx(65e12 * 0.2 / (3 * frame_flops))
    # a measured preset calibrates the others: its fraction of peak replaces the assumed one
    tiny = preset("tiny")
    t_train, t_frame = plan_mod.model_flops(tiny)
    monkeypatch.setitem(plan_mod.MEASURED, "tiny", {"device": "H100", "precision": "fp16", "batch": 4,
                                                     "train_img_s": 0.1 * 989e12 / (3 * t_train),
                                                     "predict_img_s": 0.3 * 989e12 / t_frame})
    rates, _ = plan_mod.rates_for(cfg, "T4", "fp16")
    assert "10% training / 30% predicting" in rates.source and "(tiny)" in rates.source
    assert rates.train_img_s == pytest.approx(65e12 * 0.1 / (3 * frame_flops))
    assert rates.predict_img_s == pytest.approx(65e12 * 0.3 / frame_flops)


def test_crop_presets_cost_crops_to_train_and_frames_to_predict():
    cfg = preset("full")
    train_flops, frame_flops = plan_mod.model_flops(cfg)
    assert train_flops == pytest.approx(frame_flops * 1024 * 1024 / (1280 * 1920), rel=0.02)
    memory = plan_mod.train_memory_gb(cfg, "fp16")
    assert 0.3 * 16 < memory < 0.75 * 16  # leaves room on a 16 GB T4 for what the estimate leaves out
    # the README's table: unet ~11 GB at batch 8 in fp16; unet-1280 ~6 GB at batch 2
    assert plan_mod.train_memory_gb(preset("unet"), "fp16") == pytest.approx(11, abs=0.5)
    assert plan_mod.train_memory_gb(preset("unet-1280"), "fp16") == pytest.approx(6, abs=0.5)


def test_cli_prints_the_table_and_refuses_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = [sys.executable, "-m", "competition", "plan", "--preset", "unet", "--accelerator", "l4",
            "--train-img-s", "10", "--predict-img-s", "20"]
    r = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: the test pass needs 13.9 h") and r.stderr.count("\n") == 1
    assert "| total | **39.5 h** |" in r.stdout and "stated on the command line" in r.stdout
    r = subprocess.run(base + ["--folds", "0", "--tta", "none"], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| predict shards | 1 |" in r.stdout and "| sessions per fold | 1 |" in r.stdout
    r = subprocess.run(base + ["--folds", "0", "--tta", "none", "--pipeline-img-s", "5"], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| training rate | 5 img/s (**CPU-bound**) | the slower of the GPUs and the CPU input pipeline: stated" \
        in r.stdout


def test_the_measured_article_presets_cost_themselves_but_calibrate_nothing():
    rates, flops = plan_mod.rates_for(preset("article-unet"), "H100", "fp16")
    assert flops is None and rates.train_img_s == plan_mod.MEASURED["article-unet"]["train_img_s"]
    assert "H100" in rates.source
    rates, _ = plan_mod.rates_for(preset("unet"), "T4", "fp16")  # a 96x128 net says nothing of a 640x960 one
    assert "ASSUMED" in rates.source and "article" not in rates.source


def test_plan_budget_says_the_epochs_a_budget_buys_on_each_accelerator():
    from competition.costs.budget import budget_rows
    from competition.training.budget import MARGIN
    rows = {r["accelerator"]: r for r in budget_rows(preset("unet"), 6 * 3600)}
    assert set(rows) == {"t4x2", "l4"}
    t4 = rows["t4x2"]
    recipe = recipe_for(preset("unet"), [0], "none", "t4x2")
    c = cost(recipe, plan_mod.rates_for(preset("unet"), "T4", "fp16")[0], plan_mod.pipeline_rate(preset("unet"))[0])
    assert t4["epochs"] == int((MARGIN * 6 * 3600 - c["fold_finish_h"] * 3600) // c["epoch_s"])
    assert "ESTIMATE" in t4["source"]
    half = {r["accelerator"]: r for r in budget_rows(preset("unet"), 3 * 3600)}["t4x2"]
    assert half["epochs"] < t4["epochs"]
