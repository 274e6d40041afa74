"""The second-stage refiner net: it learns to correct a coarse outline from the photo, is trained out of fold
(no photo is scored by a refiner that learnt from it), resumes, and is what score and predict use with
--refine net."""
import json
import shutil

import cv2
import numpy as np
import pytest

from competition.training import refiner as refinenet
from competition.inference import ensemble
from competition.data.folds import read_folds
from competition.base.errors import UserError
from competition.inference.predict import predict
from competition.inference.predictor import load_refiner
from competition.models.refiner import build_refiner, refiner_inputs
from competition.training.refiner import Samples, crop_sampler, train_refiner, train_refiners
from competition.runs.folder import refiner_path
from competition.scoring.score import score_fold
from competition.runs.folder import save_oof


def _drawn(seed: int, size: tuple[int, int] = (96, 144)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark 'car' on a light graded wall, its true mask, and a coarse probability (the mask seen at 1/8)."""
    rng = np.random.default_rng(seed)
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    cx, cy = int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3))
    cv2.ellipse(mask, (cx, cy), (int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 8, h // 4))),
                float(rng.integers(0, 30)), 0, 360, 1, -1)
    wall = np.linspace(160, 230, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    photo = np.where(mask[..., None] > 0, rng.uniform(20, 90, 3).astype(np.float32), wall)
    photo = np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    coarse = cv2.resize(cv2.resize(mask.astype(np.float32), (w // 8, h // 8), interpolation=cv2.INTER_AREA),
                        (w, h), interpolation=cv2.INTER_LINEAR)
    return photo, mask, coarse


def _samples(seeds: range) -> Samples:
    photos, masks, probs = zip(*(_drawn(s) for s in seeds))
    u8 = lambda xs: np.stack([cv2.convertScaleAbs(x.astype(np.float32), alpha=255.0) for x in xs])
    return Samples([f"d{s}" for s in seeds], np.stack(photos), u8(probs), u8(masks))


def _bce(q: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(q, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_an_untrained_refiner_returns_its_input_and_a_trained_one_corrects_a_coarse_outline(policy):
    """In either policy: bfloat16 convolutions (emulated where the CPU lacks them), the logit path float32."""
    import keras
    held_out = [_drawn(s) for s in range(100, 104)]
    untrained = build_refiner(policy=policy)
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy is the model's alone
    computes = {layer.name: layer.compute_dtype for layer in untrained.layers if layer.weights}
    assert {k: computes.pop(k) for k in ("logit", "correction")} == {"logit": "float32", "correction": "float32"}
    assert set(computes.values()) == {"bfloat16" if policy == "mixed_bfloat16" else "float32"}
    assert untrained.get_layer("refined").compute_dtype == "float32"
    photo, _, coarse = held_out[0]
    same = np.asarray(untrained.predict_on_batch(refiner_inputs(photo, coarse)[None]))[0, ..., 0]
    assert same.dtype == np.float32
    np.testing.assert_allclose(same, np.clip(coarse, 1e-3, 1 - 1e-3), atol=1e-5)  # the logit kept to float32

    # 60 steps of 4 crops: the held-out loss falls to about 0.26 of the coarse outline's in either policy
    model = train_refiner(_samples(range(12)), steps=60, crop=48, batch=4, policy=policy)
    assert model.get_layer("conv1").compute_dtype == untrained.get_layer("conv1").compute_dtype
    before = after = 0.0
    for photo, mask, coarse in held_out:
        q = np.asarray(model.predict_on_batch(refiner_inputs(photo, coarse)[None]))[0, ..., 0]
        before += _bce(coarse, mask)
        after += _bce(q, mask)
    assert after < 0.8 * before, (before, after)  # photos it never saw: their outlines are closer to the truth


def test_crops_follow_the_outline():
    s = _samples(range(3))
    x, y = crop_sampler(s, 32, seed=0)(64)
    assert x.shape == (64, 32, 32, 4) and y.shape == (64, 32, 32, 1)
    unsure = ((x[..., 3] * 4) > -3) & ((x[..., 3] * 4) < 3)  # the logit channel: 0.05 < p < 0.95
    assert np.mean(unsure.any(axis=(1, 2))) > 0.6  # most crops hold some of the outline


@pytest.fixture
def two_fold_run(tiny_run, synth_dir):
    """tiny_run with folds 0 and 1 trained (fold 1 a copy of fold 0's model), each with held-out probabilities."""
    shutil.copytree(tiny_run / "fold0", tiny_run / "fold1")
    folds = read_folds(tiny_run / "folds.csv")
    from competition.data.layout import open_dataset
    ds = open_dataset(synth_dir)
    for k in (0, 1):
        ids = sorted(i for i, f in folds.items() if f == k)
        probs = np.stack([cv2.resize(cv2.resize(ds.read_mask(i).astype(np.float32), (6, 4),
                                                interpolation=cv2.INTER_AREA), (48, 32)) for i in ids])[..., None]
        save_oof(tiny_run / f"fold{k}" / "oof.npz", ids, probs)
    return tiny_run


class Trainings(list):
    """The photos each refiner training was given, and (policies) the dtype policy it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.policies: list[str] = []


@pytest.fixture
def trainings(monkeypatch) -> Trainings:
    """train_refiner replaced by an untrained refiner (a real model, saved and loaded as a trained one is);
    returns the photos each training was given."""
    given = Trainings()

    def untrained(samples, steps, policy="float32", deadline=None):
        given.append(set(samples.ids))
        given.policies.append(policy)
        model = build_refiner(policy=policy)
        model.trained_steps = steps
        return model
    monkeypatch.setattr(refinenet, "train_refiner", untrained)
    return given


def test_each_fold_gets_a_refiner_that_never_saw_its_photos_and_a_rerun_keeps_what_is_current(two_fold_run, synth_dir,
                                                                                          trainings, monkeypatch):
    run = two_fold_run
    written = train_refiners(run, str(synth_dir), steps=2)
    assert written == [refiner_path(run, 0), refiner_path(run, 1), refiner_path(run, None)]
    folds = read_folds(run / "folds.csv")
    held_out = [{i for i, f in folds.items() if f == k} for k in (0, 1)]
    assert trainings == [held_out[1], held_out[0], held_out[0] | held_out[1]]  # fold 0's from fold 1's photos...
    record = json.loads((run / "refiner" / "refiner.json").read_text())
    assert set(record["fold0.keras"]["sources"]) == {"fold1"} and set(record["fold1.keras"]["sources"]) == {"fold0"}
    assert set(record["all.keras"]["sources"]) == {"fold0", "fold1"}
    stamps = {p: p.stat().st_mtime_ns for p in written}

    decoded = []
    real_samples = refinenet.fold_samples
    monkeypatch.setattr(refinenet, "fold_samples", lambda run_dir, k, *a: decoded.append(k) or real_samples(run_dir, k, *a))
    assert train_refiners(run, str(synth_dir), steps=2) == written
    assert {p: p.stat().st_mtime_ns for p in written} == stamps and len(trainings) == 3  # nothing retrained
    assert decoded == []  # nor a photo read to find that out

    ids, probs = np.load(run / "fold1" / "oof.npz")["ids"], np.load(run / "fold1" / "oof.npz")["probs"]
    save_oof(run / "fold1" / "oof.npz", [str(i) for i in ids], (255 - probs[..., None]) / 255.0)  # fold 1 retrained
    train_refiners(run, str(synth_dir), steps=2)
    changed = {p.name for p in written if p.stat().st_mtime_ns != stamps[p]}
    assert changed == {"fold0.keras", "all.keras"}  # the refiners that learnt from fold 1

    monkeypatch.setattr(refinenet, "CHANNELS", refinenet.CHANNELS * 2)  # another recipe: every refiner again
    before = len(trainings)
    train_refiners(run, str(synth_dir), steps=2)
    assert len(trainings) == before + 3


def test_a_refiner_whose_folds_were_retrained_is_not_used(two_fold_run, synth_dir, trainings):
    run = two_fold_run
    train_refiners(run, str(synth_dir), steps=2)
    assert load_refiner(run, 1).path == refiner_path(run, 1)
    ids, probs = np.load(run / "fold0" / "oof.npz")["ids"], np.load(run / "fold0" / "oof.npz")["probs"]
    save_oof(run / "fold0" / "oof.npz", [str(i) for i in ids], (255 - probs[..., None]) / 255.0)  # fold 0 retrained
    with pytest.raises(UserError, match="fold1.keras learnt from held-out predictions that have changed"):
        load_refiner(run, 1)
    with pytest.raises(UserError, match="have changed"):
        score_fold(run, 1, str(synth_dir), tta="none", refine="net")
    assert load_refiner(run, 0).path == refiner_path(run, 0)  # fold 0's refiner learnt from fold 1 only


def test_one_fold_is_not_enough(tiny_run, synth_dir):
    with pytest.raises(UserError, match="at least 2 trained folds"):
        train_refiners(tiny_run, str(synth_dir), steps=2)


def test_the_test_sets_refiner_alone_learns_from_every_fold_even_one(two_fold_run, synth_dir, trainings):
    """What a predict kernel trains: all.keras only, from the folds it gathered (one is enough)."""
    run = two_fold_run
    assert train_refiners(run, str(synth_dir), steps=2, test_only=True) == [refiner_path(run, None)]
    folds = read_folds(run / "folds.csv")
    assert trainings == [{i for i, f in folds.items() if f in (0, 1)}]  # every held-out photo of both folds, once
    assert not refiner_path(run, 0).exists() and not refiner_path(run, 1).exists()
    assert load_refiner(run, None).path == refiner_path(run, None)
    shutil.rmtree(run / "fold1")
    shutil.rmtree(run / "refiner")
    train_refiners(run, str(synth_dir), steps=2, test_only=True)
    assert trainings[-1] == {i for i, f in folds.items() if f == 0}


def test_score_refines_a_fold_with_its_own_refiner_and_predict_with_all(two_fold_run, synth_dir, tmp_path,
                                                                       monkeypatch, trainings):
    run = two_fold_run
    with pytest.raises(UserError, match=r"no refiner for fold 0; train it with `python -m competition refiner"):
        score_fold(run, 0, str(synth_dir), refine="net")
    train_refiners(run, str(synth_dir), steps=2)
    loaded = []
    real = ensemble.load_refiner

    calls = []

    def spy(run_dir, fold):
        loaded.append(fold)
        refiner = real(run_dir, fold)
        inner = refiner.model

        class Counting:  # the loaded net, counting the photos it refines and their size
            def predict_on_batch(self, x):
                calls.append(x.shape)
                return inner.predict_on_batch(x)
        refiner.model = Counting()
        return refiner
    monkeypatch.setattr(ensemble, "load_refiner", spy)
    summary = score_fold(run, 1, str(synth_dir), tta="none", refine="net")
    assert loaded == [1] and summary["refine"] == "net"
    from competition.base.geometry import Geometry
    from competition.inference.upsample import guide_reduction
    r = guide_reduction(Geometry(32, 48))
    assert len(calls) == summary["images"] and set(calls) == {(1, -(-1280 // r), -(-1918 // r), 4)}
    assert json.loads((run / "fold1" / "score.json").read_text())["refine"] == "net"

    out = predict(run, str(synth_dir), tmp_path / "net.csv", folds=[0], refine="net")
    assert loaded == [1, None]
    made = json.loads((tmp_path / "net.csv.json").read_text())
    assert made["refine"] == "net" and made["refiner"] == load_refiner(run, None).digest
    assert out.read_text().startswith("img,rle_mask\n")


def test_a_blend_refines_each_run_with_its_own_refiner_for_the_scored_fold_and_all_for_the_test_set(
        two_fold_run, synth_dir, tmp_path, monkeypatch, trainings):
    import keras

    from competition.inference.ensemble import MemberSpec
    from competition.models.saving import save_model
    run, other = two_fold_run, tmp_path / "other"
    train_refiners(run, str(synth_dir), steps=2)
    shutil.copytree(run, other)
    for k in (1, None):  # the other run's refiners for fold 1 and the test set say "car" everywhere
        model = keras.models.load_model(refiner_path(other, k), compile=False)
        kernel, bias = model.get_layer("correction").get_weights()
        model.get_layer("correction").set_weights([kernel, bias + 20.0])
        save_model(model, refiner_path(other, k))
    loaded = []
    real = ensemble.load_refiner
    monkeypatch.setattr(ensemble, "load_refiner", lambda r, k: loaded.append((r, k)) or real(r, k))
    specs = [MemberSpec(str(run)), MemberSpec(str(other))]

    summary = score_fold(specs, 1, str(synth_dir), tta="none", refine="net", name="b")
    assert loaded == [(run, 1), (other, 1)]  # each run's own, the one that never saw fold 1's photos
    mine, theirs = summary["members"]
    assert mine["refine"] == theirs["refine"] == "net"
    assert theirs["dice_mean"] < mine["dice_mean"] - 0.1  # the other run's (broken) refiner was the one it used

    out = predict(specs, str(synth_dir), tmp_path / "b.csv", refine="net", limit=2, threshold=0.4)
    assert loaded[2:] == [(run, None), (other, None)]
    made = json.loads((tmp_path / "b.csv.json").read_text())
    assert made["refine"] == ["net", "net"]
    assert made["refiner"] == [load_refiner(run, None).digest, load_refiner(other, None).digest]
    assert made["refiner"][0] != made["refiner"][1]
    assert [m["sources"] for m in made["refiner_made"]] == [load_refiner(run, None).made["sources"]] * 2
    guided = predict(specs, str(synth_dir), tmp_path / "g.csv", refine="guided", limit=2, threshold=0.4)
    rows = lambda p: p.read_text().splitlines()[1:]
    assert len(rows(out)) == 2 and rows(out) != rows(guided)  # the other run's all.keras moved the blend
    full = "1 " + str(1918 * 1280)  # every pixel: the broken refiner (p ~ 1) and the sound one (p ~ 0) average 0.5
    assert all(r.split(",")[1] == full for r in rows(out))


def test_shards_whose_kernels_each_trained_the_refiner_merge_unless_it_learnt_otherwise(two_fold_run, synth_dir,
                                                                                       tmp_path, trainings):
    """Every shard kernel trains its own refiner from the same held-out predictions; GPU training is not
    bit-reproducible, so merge compares what each learnt from and how, not its bytes."""
    import keras

    from competition.inference.submission import made_path, merge
    from competition.models.saving import save_model
    run, sample = two_fold_run, synth_dir / "sample_submission.csv"
    train_refiners(run, str(synth_dir), steps=2, test_only=True)
    parts = [predict(run, str(synth_dir), tmp_path / "s.csv", shard=(0, 2), refine="net")]
    model = keras.models.load_model(refiner_path(run, None), compile=False)  # the second kernel's: other bytes
    kernel, bias = model.get_layer("correction").get_weights()
    model.get_layer("correction").set_weights([kernel, bias + 0.01])
    save_model(model, refiner_path(run, None))
    parts.append(predict(run, str(synth_dir), tmp_path / "s.csv", shard=(1, 2), refine="net"))
    made = [json.loads(made_path(p).read_text()) for p in parts]
    assert made[0]["refiner"] != made[1]["refiner"] and made[0]["refiner_made"] == made[1]["refiner_made"]
    merge(parts, tmp_path / "m.csv", sample)

    ids, probs = np.load(run / "fold1" / "oof.npz")["ids"], np.load(run / "fold1" / "oof.npz")["probs"]
    save_oof(run / "fold1" / "oof.npz", [str(i) for i in ids], (255 - probs[..., None]) / 255.0)  # fold 1 retrained
    train_refiners(run, str(synth_dir), steps=2, test_only=True)
    parts[1] = predict(run, str(synth_dir), tmp_path / "s.csv", shard=(1, 2), refine="net")
    with pytest.raises(UserError, match="refiner nets that learnt from other held-out predictions"):
        merge(parts, tmp_path / "m2.csv", sample)


def test_learning_from_training_photos_uses_the_folds_own_model_on_its_own_photos_and_never_its_held_out(
        tiny_run, synth_dir):
    """The probabilities a refiner learns from with --refiner-from training are what the fold's model gives its
    training photos: a copy of fold 0's model as fold 1 trains on fold 0's held-out photos, whose probabilities
    train itself wrote to fold0/oof.npz through its own input pipeline."""
    from competition.config import load_config
    from competition.data.layout import open_dataset
    from competition.base.geometry import Geometry
    from competition.runs.folder import load_oof
    run = tiny_run
    shutil.copytree(run / "fold0", run / "fold1")
    cfg, ds = load_config(run / "config.json"), open_dataset(synth_dir)
    folds = read_folds(run / "folds.csv")
    own = refinenet.training_samples(run, 1, ds, cfg)
    assert set(own.ids) == {i for i, f in folds.items() if f != 1}  # its training photos, none of fold 1's
    ids, probs = load_oof(run / "fold0" / "oof.npz")
    held = refinenet._samples(ds, Geometry(cfg.height, cfg.width, cfg.fit), ids, probs)
    at = [own.ids.index(i) for i in ids]
    assert np.abs(own.probs[at].astype(int) - held.probs.astype(int)).max() <= 2
    assert (own.photos[at] == held.photos).all() and (own.masks[at] == held.masks).all()
    assert np.ptp(own.probs) > 128  # a model's probabilities, not a constant


def test_one_trained_fold_is_enough_to_learn_from_its_training_photos(tiny_run, synth_dir, trainings):
    run = tiny_run
    written = train_refiners(run, str(synth_dir), steps=2, refiner_from="training")
    assert written == [refiner_path(run, 0), refiner_path(run, None)]
    folds = read_folds(run / "folds.csv")
    assert trainings == [{i for i, f in folds.items() if f != 0}]  # once: all.keras learns the same, so it is a copy
    assert refiner_path(run, None).read_bytes() == refiner_path(run, 0).read_bytes()
    record = json.loads((run / "refiner" / "refiner.json").read_text())
    assert record["fold0.keras"]["learns_from"] == "training" and record["fold0.keras"]["photos"] == len(trainings[0])
    assert load_refiner(run, 0).path == refiner_path(run, 0) and load_refiner(run, None).path == refiner_path(run, None)
    assert score_fold(run, 0, str(synth_dir), tta="none", refine="net")["refine"] == "net"

    assert train_refiners(run, str(synth_dir), steps=2, refiner_from="training") == written
    assert len(trainings) == 1  # up to date: nothing retrained
    (run / "fold0" / "model.keras").write_bytes((run / "fold0" / "model.keras").read_bytes() + b"\0")  # retrained
    with pytest.raises(UserError, match="fold0.keras learnt from fold models that have changed.*--refiner-from training"):
        load_refiner(run, 0)
    with pytest.raises(UserError, match="--refiner-from sideways: choose one of held-out, training"):
        train_refiners(run, str(synth_dir), steps=2, refiner_from="sideways")
    (run / "fold0" / "train.json").unlink()  # a fold still training (or stopped by its time limit) has no train.json
    with pytest.raises(UserError, match="needs at least 1 trained fold; found 0"):
        train_refiners(run, str(synth_dir), steps=2, refiner_from="training")


def test_the_refiner_learns_as_the_runs_config_says_unless_told_otherwise(tiny_run, synth_dir, trainings):
    """cpu's config says refiner_from "training" and 3000 steps: a bare `refiner` does that (one fold is
    enough); the command line still overrides either."""
    from competition import cli
    from competition.config import REFINER_FROM, load_config, save_config
    from competition.runs.folder import REFINER_FROM_FILE
    assert tuple(REFINER_FROM_FILE) == REFINER_FROM  # what a config may say is what refiner can do
    run = tiny_run
    save_config(run / "config.json", load_config(run / "config.json").replace(refiner_from="training",
                                                                                refiner_steps=3))
    assert cli.main(["refiner", "--run", str(run), "--data", str(synth_dir)]) == 0
    record = json.loads((run / "refiner" / "refiner.json").read_text())
    assert record["fold0.keras"]["learns_from"] == "training" and record["fold0.keras"]["steps"] == 3
    assert len(trainings) == 1
    assert cli.main(["refiner", "--run", str(run), "--data", str(synth_dir), "--steps", "2"]) == 0
    assert json.loads((run / "refiner" / "refiner.json").read_text())["fold0.keras"]["steps"] == 2
    assert len(trainings) == 2  # other steps: trained again
    with pytest.raises(UserError, match="needs at least 2 trained folds"):  # held-out needs another fold's photos
        train_refiners(run, str(synth_dir), refiner_from="held-out")
    with pytest.raises(UserError, match="--refiner-steps 0: the refiner needs at least 1 training batch"):
        train_refiners(run, str(synth_dir), steps=0)
    with pytest.raises(UserError, match="unknown refiner source 'sideways'"):
        load_config(run / "config.json").replace(refiner_from="sideways")


@pytest.mark.parametrize("mixed, bf16_cpu, policy", [(True, True, "mixed_bfloat16"), (True, False, "float32"),
                                                      (False, True, "float32")])
def test_a_mixed_precision_run_trains_its_refiner_in_bfloat16_only_where_the_cpu_has_it(
        tiny_run, synth_dir, trainings, monkeypatch, mixed, bf16_cpu, policy):
    """As its first stage (train.precision_policy): the policy is recorded, so changing it trains again, and a
    float32 refiner's record has no "policy" (refiners recorded before it existed stay current)."""
    from competition.models import runtime as runtime_mod
    from competition.config import load_config, save_config
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda cpuinfo=None: bf16_cpu)
    run = tiny_run
    save_config(run / "config.json", load_config(run / "config.json").replace(
        refiner_from="training", refiner_steps=2, mixed_precision=mixed))
    train_refiners(run, str(synth_dir))
    record = json.loads((run / "refiner" / "refiner.json").read_text())["fold0.keras"]
    assert trainings.policies == [policy] and record.get("policy", "float32") == policy
    assert ("policy" in record) == (policy != "float32")
    saved = load_refiner(run, 0).model  # as score and predict load it
    assert saved.get_layer("conv0").compute_dtype == ("bfloat16" if policy != "float32" else "float32")
    assert saved.get_layer("refined").compute_dtype == "float32"
    train_refiners(run, str(synth_dir))
    assert len(trainings) == 1  # the same policy: up to date
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda cpuinfo=None: not bf16_cpu)
    train_refiners(run, str(synth_dir))
    assert len(trainings) == (2 if mixed else 1)  # a mixed run's policy follows the CPU: trained again


def test_each_fold_learns_from_its_own_training_photos_and_the_test_sets_is_the_first_folds(tiny_run, synth_dir,
                                                                                           trainings):
    run = tiny_run
    shutil.copytree(run / "fold0", run / "fold1")
    written = train_refiners(run, str(synth_dir), steps=2, refiner_from="training")
    assert written == [refiner_path(run, 0), refiner_path(run, 1), refiner_path(run, None)]
    folds = read_folds(run / "folds.csv")
    assert trainings == [{i for i, f in folds.items() if f != k} for k in (0, 1)]  # two trainings, one per fold
    assert refiner_path(run, None).read_bytes() == refiner_path(run, 0).read_bytes()
    refiner_path(run, None).unlink()
    train_refiners(run, str(synth_dir), steps=2, refiner_from="training")
    assert len(trainings) == 2 and refiner_path(run, None).read_bytes() == refiner_path(run, 0).read_bytes()
