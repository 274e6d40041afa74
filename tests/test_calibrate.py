"""calibrate: the speed measurements `plan` can use, taken with whatever Keras backend is installed."""
import json

from competition.costs import calibrate
from competition.cli import main


def test_calibrate_times_each_case_and_records_a_failing_one(tmp_path, monkeypatch):
    """One run (each case builds and traces a model: seconds apiece): a preset, a crop case, and a preset whose
    measurement fails - recorded, the others still measured."""
    real = calibrate.measure

    def measure(cfg, steps, predict_batch):
        if cfg.preset == "demo":
            raise MemoryError("out of memory (simulated)")
        return real(cfg, steps, predict_batch)
    monkeypatch.setattr(calibrate, "measure", measure)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--out", str(out), "--presets", "demo,tiny,tiny:16x32:2", "--steps", "2",
                 "--predict-batch", "3"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "tensorflow" and result["precision"] == "float32"
    assert result["device"].startswith("cpu:")  # tests hide GPUs (conftest)
    assert "MemoryError" in result["presets"]["demo"]["error"]

    tiny = result["presets"]["tiny"]
    assert tiny["train_shape"] == [32, 48] and tiny["predict_shape"] == [32, 48] and tiny["predict_batch"] == 3
    assert tiny["train_cpu_s_per_img"] > 0
    assert len(tiny["train_step_s"]) == 2 and all(t > 0 for t in tiny["train_step_s"] + tiny["predict_step_s"])
    median = sorted(tiny["train_step_s"])[0] / 2 + sorted(tiny["train_step_s"])[1] / 2
    assert abs(tiny["train_img_s"] - 4 / median) < 1e-9 * tiny["train_img_s"]  # batch 4 over the median step

    case = result["presets"]["tiny:16x32:2"]  # trains on the crop, predicts the whole frame
    assert case["train_shape"] == [16, 32] and case["batch"] == 2 and case["predict_shape"] == [32, 48]


def test_parse_case():
    assert calibrate.parse_case("unet-1280:512x768:8") == ("unet-1280", (512, 768), 8)
    assert calibrate.parse_case("demo") == ("demo", None, None)
