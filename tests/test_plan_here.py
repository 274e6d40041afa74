"""`plan --accelerator here`: a recipe's hours on this CPU on the full data, checked by hand from stated rates."""
from __future__ import annotations

import pytest

from competition.config import preset
from competition.costs.here import NET_POST_S, PIPELINE_FACTOR, here_cost, post_seconds, render_here
from competition.training.budget import CURVES_S, Rates

RATES = Rates(train_step_s=0.2, eval_image_s=0.01, refiner_step_s=0.05, decode_s=0.01, trace_s=2.0, reload_s=1.0,
              refiner_trace_s=1.5, source="stated")


def test_a_cpu_fold_is_its_epochs_the_work_after_them_and_its_refiner():
    cfg = preset("cpu")  # batch 4, k 5, 20 epochs, a 3,000-step refiner from the fold's own 4,070 photos
    c = here_cost(cfg, RATES, 1, "hflip", test_images=1000)
    epoch = (1018 * 0.2 + 1018 * 0.01) * PIPELINE_FACTOR  # ceil(4,070 / 4) steps, 1,018 validation frames
    after = 1018 * 0.01 + 1.0 + 2.0 + CURVES_S  # out of fold, the best model reloaded, traced again, the curves
    refiner = 4070 * (0.01 + 0.01) + 1.0 + 1.5 + 3000 * 0.05  # its photos prepared and predicted, start, steps
    assert c.epoch_h * 3600 == pytest.approx(epoch)
    assert c.fold_h * 3600 == pytest.approx(20 * epoch + after + refiner)
    post = post_seconds(cfg)[0]
    assert post == pytest.approx(NET_POST_S)  # cpu's own refinement, as measured
    assert c.test_h * 3600 == pytest.approx(1000 * (2 * 0.01 + post))
    assert here_cost(cfg, RATES, 5, "hflip", 1000).test_h * 3600 == pytest.approx(1000 * (10 * 0.01 + post))


def test_a_preset_without_a_refiner_costs_none():
    cfg = preset("demo")  # the guided filter only; k 4: 3,816 training photos at batch 8
    c = here_cost(cfg, RATES, 1, "none", test_images=0)
    epoch = (477 * 0.2 + 1272 * 0.01) * PIPELINE_FACTOR
    assert c.fold_h * 3600 == pytest.approx(12 * epoch + 1272 * 0.01 + 1.0 + 2.0 + CURVES_S) and c.test_h == 0


def test_the_table_says_each_figure_is_an_estimate_and_how():
    cfg = preset("cpu")
    c = here_cost(cfg, RATES, 5, "hflip")
    text = render_here(cfg, c, "hflip")
    assert "ESTIMATES from step times measured here" in text and "stated" in text
    assert f"| one fold | {c.fold_h:.1f} h |" in text and f"| total | **{c.total_h:.1f} h** |" in text


def test_a_budget_here_is_what_train_budget_would_plan_for_a_full_fold():
    from competition.costs.here import budget_line, full_fold
    from competition.training.budget import make_plan
    import dataclasses
    cfg = preset("cpu")
    fed = dataclasses.replace(RATES, train_step_s=RATES.train_step_s * PIPELINE_FACTOR)
    plan = make_plan(8 * 3600, 0.0, cfg.epochs, cfg.refiner_steps, cfg.warmup, full_fold(cfg), fed)
    line = budget_line(cfg, RATES, 8 * 3600)
    assert f": {plan['epochs']} epochs and {plan['refiner_steps']:,} refiner steps (ESTIMATE" in line
    assert "needs at least" in budget_line(cfg, RATES, 60)  # too short: the least it needs, one line
