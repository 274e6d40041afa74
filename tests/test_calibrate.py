"""calibrate: the speed measurements `plan` can use, taken with whatever Keras backend is installed."""
import json

from competition import calibrate


def test_calibrate_times_training_and_prediction_of_each_preset(tmp_path):
    out = tmp_path / "cal.json"
    assert calibrate.main(["--out", str(out), "--presets", "tiny", "--steps", "2", "--predict-batch", "3"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "tensorflow" and result["precision"] == "float32"
    assert result["device"].startswith("cpu:")  # tests hide GPUs (conftest)
    tiny = result["presets"]["tiny"]
    assert tiny["train_shape"] == [32, 48] and tiny["predict_shape"] == [32, 48] and tiny["predict_batch"] == 3
    assert tiny["train_cpu_s_per_img"] > 0
    assert len(tiny["train_step_s"]) == 2 and all(t > 0 for t in tiny["train_step_s"] + tiny["predict_step_s"])
    median = sorted(tiny["train_step_s"])[0] / 2 + sorted(tiny["train_step_s"])[1] / 2
    assert abs(tiny["train_img_s"] - 4 / median) < 1e-9 * tiny["train_img_s"]  # batch 4 over the median step


def test_one_preset_that_fails_is_recorded_and_the_others_still_measured(tmp_path, monkeypatch):
    real = calibrate.measure

    def measure(cfg, steps, predict_batch):
        if cfg.preset == "demo":
            raise MemoryError("out of memory (simulated)")
        return real(cfg, steps, predict_batch)
    monkeypatch.setattr(calibrate, "measure", measure)
    result = calibrate.calibrate(["demo", "tiny"], False, 1, 2)
    assert "MemoryError" in result["presets"]["demo"]["error"]
    assert result["presets"]["tiny"]["train_img_s"] > 0


def test_a_crop_case_trains_on_the_crop_and_predicts_on_the_whole_frame():
    assert calibrate.parse_case("unet-1280:512x768:8") == ("unet-1280", (512, 768), 8)
    assert calibrate.parse_case("demo") == ("demo", None, None)
    result = calibrate.calibrate(["tiny:16x32:2"], False, 1, 2)
    case = result["presets"]["tiny:16x32:2"]
    assert case["train_shape"] == [16, 32] and case["batch"] == 2 and case["predict_shape"] == [32, 48]
