"""`train --config FILE`: a TrainConfig as JSON (a run's config.json as it is, or a few fields on a preset), flags on
top; and train's help leading with the options a user changes first."""
from __future__ import annotations

import json

import pytest

from competition.base.errors import UserError
from competition.cli import build_parser, main, parse
from competition.cli.train_flags import train_config
from competition.config import TrainConfig, preset


def _config(*args: str) -> TrainConfig:
    return train_config(parse(["train", *args]))


def test_a_runs_config_json_is_read_as_it_is(tmp_path):
    cfg = preset("cpu", epochs=7, lr=3e-4, refiner_steps=1500)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_json()))
    assert _config("--config", str(path)) == cfg


def test_a_partial_file_sets_its_fields_on_its_preset_and_flags_win(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"preset": "cpu", "epochs": 9, "lr": 5e-4}))
    cfg = _config("--config", str(path), "--lr", "2e-4")
    assert cfg == preset("cpu", epochs=9, lr=2e-4)  # the file's epochs, the flag's lr, the rest cpu's


def test_a_partial_file_without_a_preset_is_on_the_default_one(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"epochs": 3}))
    assert _config("--config", str(path)) == preset("unet", epochs=3)


@pytest.mark.parametrize("text, says", [
    ('{"epochs": "many"}', "epochs"),
    ('{"depth": 99}', "depth"),
    ('{"no_such_setting": 1}', "no_such_setting"),
    ('[1, 2]', "list"),
    ('{"epochs": 3', "mine.json"),
])
def test_a_bad_file_is_one_line_naming_what(tmp_path, text, says):
    path = tmp_path / "mine.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        _config("--config", str(path))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_config_with_preset_or_a_missing_file_is_one_line_and_writes_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mine.json"
    path.write_text("{}")
    for args, says in ((["--config", str(path), "--preset", "cpu"], "give one of them"),
                       (["--config", str(tmp_path / "nope.json")], "no such file")):
        assert main(["train", *args, "--run", str(tmp_path / "r"), "--data", str(tmp_path)]) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json"]


def test_trains_help_leads_with_the_options_changed_first():
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    text = sub.format_help()
    text = text[text.index("options:"):]  # below the usage line, which names every option
    first, rest = text.index("--preset"), text.index("the run's config, for tuning")
    assert first < rest and text.index("--config") < rest and text.index("--depth") > rest
