"""The CLI's own contract: parser errors are one line (exit code 2, no usage block, no traceback), values that
start with '-' reach the code, --debug/--quiet anywhere, train's flags generated from TrainConfig, every flag of
before the cli package still there with its meaning, a default and an example in every help, and the option
table in docs/guide.md drawn from the parser. In-process (fast) but for a few subprocess runs."""
import argparse
import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from competition.cli import build_parser, main, parse
from competition.cli.parser import HelpFormatter, ParseError, takes_dash_value
from competition.cli.table import current_section, option_table, subcommands
from competition.cli.train_flags import NOT_FLAGS, flag_of, train_config
from competition.config import TrainConfig, preset
from competition.base.console import set_quiet

ROOT = Path(__file__).resolve().parents[1]

OLD_FLAGS = {'synth': {'--out': ('out', 'data/synthetic'),
           '--cars': ('cars', 8),
           '--test': ('test', 32),
           '--seed': ('seed', 0),
           '--zip': ('zip', False)},
 'info': {'--data': ('data', None)},
 'folds': {'--data': ('data', None), '--k': ('k', 5), '--seed': ('seed', 42), '--out': ('out', 'folds.csv')},
 'download': {'--dest': ('dest', 'data/carvana'), '--files': ('files', None), '--force': ('force', False)},
 'extract': {'--data': ('data', None),
             '--budget': ('budget', None),
             '--to': ('to', None),
             '--dry-run': ('dry_run', False)},
 'train': {'--fold': ('fold', '0'),
           '--preset': ('preset', None),
           '--data': ('data', None),
           '--run': ('run', None),
           '--name': ('run', None),
           '--runs': ('runs', 'runs'),
           '--cache': ('cache', 'cache'),
           '--force': ('force', False),
           '--model': ('model', None),
           '--depth': ('depth', None),
           '--filters': ('filters', None),
           '--pooling': ('pooling', None),
           '--size': ('size', None),
           '--fit': ('fit', None),
           '--crop': ('crop', None),
           '--loss': ('loss', None),
           '--bce-weight': ('bce_weight', None),
           '--lr': ('lr', None),
           '--schedule': ('schedule', None),
           '--warmup': ('warmup', None),
           '--clipnorm': ('clipnorm', None),
           '--batch': ('batch', None),
           '--epochs': ('epochs', None),
           '--patience': ('patience', None),
           '--augment': ('augment', None),
           '--k': ('k', None),
           '--max-images': ('max_images', None),
           '--seed': ('seed', None),
           '--dropout': ('dropout', None),
           '--batchnorm': ('batchnorm', None),
           '--no-batchnorm': ('batchnorm', None),
           '--encoder': ('encoder', None),
           '--encoder-weights': ('encoder_weights', None),
           '--freeze-encoder': ('freeze_encoder', None),
           '--mixed-precision': ('mixed_precision', None),
           '--no-mixed-precision': ('mixed_precision', None),
           '--time-limit': ('time_limit', None),
           '--mirror': ('mirror', None)},
 'predict': {'--run': ('run', None),
             '--blend': ('blend', None),
             '--data': ('data', None),
             '--out': ('out', None),
             '--folds': ('folds', None),
             '--tta': ('tta', 'hflip'),
             '--threshold': ('threshold', None),
             '--refine': ('refine', None),
             '--batch': ('batch', None),
             '--shard': ('shard', None),
             '--limit': ('limit', None),
             '--time-limit': ('time_limit', None),
             '--mirror': ('mirror', None)},
 'merge': {'--out': ('out', None), '--sample': ('sample', None), '--data': ('data', None)},
 'made-as': {'--tta': ('tta', 'hflip'), '--refine': ('refine', None), '--folds': ('folds', None)},
 'validate': {'--sample': ('sample', None), '--data': ('data', None)},
 'submit': {'--message': ('message', 'competition toolkit submission'),
            '-m': ('message', 'competition toolkit submission'),
            '--sample': ('sample', None),
            '--data': ('data', None)},
 'score': {'--run': ('run', None),
           '--blend': ('blend', None),
           '--fold': ('fold', 0),
           '--data': ('data', None),
           '--tta': ('tta', 'hflip'),
           '--worst': ('worst', 10),
           '--threshold': ('threshold', None),
           '--refine': ('refine', None),
           '--tune-threshold': ('tune_threshold', False),
           '--submission': ('submission', None)},
 'cv': {'--run': ('run', None),
        '--blend': ('blend', None),
        '--data': ('data', None),
        '--tta': ('tta', 'hflip'),
        '--refine': ('refine', None),
        '--tune-threshold': ('tune_threshold', False)},
 'refiner': {'--run': ('run', None),
             '--data': ('data', None),
             '--steps': ('steps', None),
             '--test-only': ('test_only', False),
             '--learn-from': ('learn_from', None)},
 'kernel': {'--task': ('task', 'train'),
            '--fold': ('fold', None),  # None since issue 37: 0 for one kernel, every fold's table for status
            '--folds': ('folds', None),
            '--preset': ('preset', 'unet'),
            '--run': ('run', None),
            '--name': ('run', None),
            '--user': ('user', None),
            '--accelerator': ('accelerator', 't4x2'),
            '--shard': ('shard', None),
            '--train-kernels': ('train_kernels', None),
            '--epochs': ('epochs', None),
            '--encoder': ('encoder', None),
            '--encoder-weights': ('encoder_weights', None),
            '--freeze-encoder': ('freeze_encoder', None),
            '--filters': ('filters', None),
            '--weights-dataset': ('weights_dataset', None),
            '--refine': ('refine', None),
            '--out': ('out', None),  # build/push/queue: kernels/build; output: the run folder (issue 35)
            '--dest': ('dest', None)},
 'bench': {'--quick': ('quick', False), '--out': ('out', 'bench')},
 'plan': {'--preset': ('preset', 'unet'),
          '--folds': ('folds', None),
          '--tta': ('tta', 'hflip'),
          '--gpu': ('gpu', 't4x2'),
          '--size': ('size', None),
          '--crop': ('crop', None),
          '--batch': ('batch', None),
          '--epochs': ('epochs', None),
          '--k': ('k', None),
          '--refine': ('refine', None),
          '--train-img-s': ('train_img_s', None),
          '--predict-img-s': ('predict_img_s', None),
          '--pipeline-img-s': ('pipeline_img_s', None),
          '--allow-split': ('allow_split', False)}}
RENAMED_DESTS = {("train", "--model"): "arch",  # the generated flag's dest is the field it sets
                 # one name for what the refiner learns from since issue 44: refiner_from, --refiner-from
                 ("refiner", "--learn-from"): "refiner_from", ("train", "--learn-from"): "refiner_from",
                 # one meaning of --seed since issue 44: train's; the synthetic set's and the folds' have their own
                 ("synth", "--seed"): "synth_seed", ("folds", "--seed"): "fold_seed",
                 ("calibrate", "--steps"): "timed_steps",
                 # one spelling for "where this command writes" since issue 35: --out, the old ones its aliases
                 ("download", "--dest"): "out", ("extract", "--to"): "out", ("kernel", "--dest"): "out",
                 # one spelling of the accelerator across subcommands since issue 44
                 ("plan", "--gpu"): "accelerator"}


@pytest.fixture(autouse=True)
def _loud_again():
    yield
    set_quiet(False)  # main(["--quiet", ...]) sets it for the process


def one_line_error(capsys, rc: int) -> str:
    """The one stderr line of a failed command (exit code 2, no usage block, no traceback)."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "usage:" not in err and "Traceback" not in err, err
    return err.strip()


# --- the parser's own errors ---------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["refiner", "--data", "data"], "error: refiner: the following arguments are required: --run; see --help"),
    (["plan", "--tta", "rot90"], "error: plan: --tta: invalid choice: 'rot90'"),
    (["train", "--encoder", "resnet18"], "error: train: --encoder: invalid choice: 'resnet18'"),
    (["kernel", "build", "--task", "eval"], "error: kernel: --task: invalid choice: 'eval'"),
    (["kernel", "fly"], "error: kernel: action: invalid choice: 'fly'"),
    (["refiner", "--run", "r", "--steps", "abc"], "error: refiner: --refiner-steps/--steps: 'abc' is not a whole number; see --help"),
    (["predict", "--run", "r", "--out", "x", "--threshold", "high"], "error: predict: --threshold: 'high' is not a number"),
    (["score", "--run", "runs/A", "--bogus"], "error: score: unrecognized arguments: --bogus; see --help"),
    (["cv", "--run", "A", "extra"], "error: cv: unrecognized arguments: extra; see --help"),
    (["train", "--run", "a", "--run", "b"], "error: train: --run given twice (a and b)"),
    (["train", "--time-limit"], "error: train: --time-limit: expected one argument; see --help"),
    (["nope"], "error: unknown command: 'nope' (choose from 'synth'"),
    ([], "error: the following arguments are required: <command>; see --help"),
])
def test_parser_errors_are_one_line(args, line, capsys):
    err = one_line_error(capsys, main(args))
    assert err.startswith(line) and err.endswith("; see --help"), err


@pytest.mark.parametrize("args, needle", [
    (["plan", "--accelerator", "a100"], "error: unknown --accelerator 'a100'"),
    (["train", "--time-limit", "-5m"], "error: --time-limit '-5m': expected a duration"),
    (["score", "--run", "runs/A", "--debug", "--bogus"], "error: score: unrecognized arguments: --bogus"),
])
def test_parser_errors_are_one_line_from_the_shell(args, needle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "competition", *args], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(needle), r.stderr
    assert "usage:" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


# --- values that start with '-' ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_negative_duration_reaches_the_code_that_rejects_it(command, capsys, tmp_path):
    args = [command, "--time-limit", "-5m", "--data", str(tmp_path)]
    err = one_line_error(capsys, main(args + (["--run", "r", "--out", "x.csv"] if command == "predict" else [])))
    assert err == "error: --time-limit '-5m': expected a duration like 11h30m, 45m, 90s or 2h15m30s"


def test_numbers_and_durations_take_values_that_start_with_a_dash():
    """A negative value reaches its option's check (and is refused there in one line), never read as a flag."""
    assert parse(["train", "--time-limit", "-1h"]).time_limit == "-1h"
    assert parse(["extract", "--budget", "-5GB"]).budget == "-5GB"
    for args, says in ((["train", "--lr", "-1e-3"], "--lr: -1e-3 is not a finite number above 0"),
                       (["train", "--epochs", "-2"], "--epochs: -2 is not from 1"),
                       (["refiner", "--run", "r", "--steps", "-3"], "--refiner-steps/--steps: -3 is not from 1"),
                       (["score", "--run", "r", "--threshold", "-.5"], "--threshold: -.5 is not a finite number")):
        with pytest.raises(ParseError, match=says):
            parse(args)
    # only numbers and durations: a text option followed by a flag is still a missing value
    with pytest.raises(Exception, match="--data: expected one argument"):
        parse(["train", "--data", "--fold", "0"])
    dashed = {f for sp in subcommands(build_parser()).values() for a in sp._actions if takes_dash_value(a)
              for f in a.option_strings}
    assert {"--time-limit", "--budget", "--lr", "--epochs", "--steps", "--threshold", "--batch"} <= dashed


def test_negative_numbers_reach_the_config_check(capsys):
    err = one_line_error(capsys, main(["train", "--preset", "tiny", "--epochs", "-2"]))
    assert "train: --epochs: -2 is not from 1 to 10000" in err


# --- --debug and --quiet anywhere ----------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--debug", "--quiet", "score", "--run", "A"],
    ["score", "--run", "A", "--debug", "--quiet"],
    ["--debug", "score", "--quiet", "--run", "A"],
])
def test_debug_and_quiet_before_or_after_the_subcommand(args):
    a = parse(args)
    assert a.debug is True and a.quiet is True and a.run == ["A"]


def test_debug_and_quiet_default_off():
    a = parse(["score", "--run", "A"])
    assert a.debug is False and a.quiet is False


def test_debug_after_the_subcommand_shows_the_traceback(capsys):
    assert main(["train", "--preset", "nope", "--debug"]) == 2
    err = capsys.readouterr().err
    offered = ", ".join(__import__("competition.config").config.OFFERED)
    assert "Traceback" in err and f"error: unknown preset 'nope': choose one of {offered}" in err.strip().splitlines()[-1]


# --- train's flags, generated from TrainConfig ---------------------------------------------------
def _train_options() -> dict[str, argparse.Action]:
    return {s: a for a in subcommands(build_parser())["train"]._actions for s in a.option_strings}


def test_every_trainconfig_field_has_a_train_flag():
    options = _train_options()
    special = {"height": "--size", "width": "--size", "crop": "--crop", "augment": "--augment"}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in NOT_FLAGS:
            assert special.get(f.name, flag_of(f.name)) in options, f.name
            assert f.metadata.get("help") or f.name in ("preset", "version"), f"TrainConfig.{f.name} has no help"


def test_train_flags_map_back_to_the_config():
    line = ("train --preset tiny --model unet --depth 3 --filters 8 --pooling strided --size 64x96 --fit pad "
            "--crop 32x32 --loss bce --bce-weight 0.3 --lr 0.01 --schedule cosine --warmup 1 --clipnorm 2 "
            "--batch 2 --epochs 3 --patience 4 --augment flip,contrast --k 3 --max-images 10 --seed 7 "
            "--dropout 0.1 --no-batchnorm --mixed-precision --dropout-blocks 1 --image-interp nearest "
            "--epsilon 1e-5 --monitor val_loss --reduce-lr-patience 2 --rotate 0.02 --contrast 0.1 --fold-seed 3 "
            "--threshold 0.4 --refine guided --learn-from training --refiner-steps 5")
    cfg = train_config(parse(line.split()))
    assert cfg == preset("tiny").replace(
        arch="unet", depth=3, filters=8, pooling="strided", height=64, width=96, fit="pad", crop=(32, 32),
        loss="bce", bce_weight=0.3, lr=0.01, schedule="cosine", warmup=1, clipnorm=2.0, batch=2, epochs=3,
        patience=4, augment=("flip", "contrast"), k=3, max_images=10, seed=7, dropout=0.1, batchnorm=False,
        mixed_precision=True, dropout_blocks=1, image_interp="nearest", epsilon=1e-5, monitor="val_loss",
        reduce_lr_patience=2, rotate=0.02, contrast=0.1, fold_seed=3, threshold=0.4, refine="guided",
        refiner_from="training", refiner_steps=5)
    # nothing given: the preset itself; 'none' clears a list or a crop
    assert train_config(parse(["train", "--preset", "tiny"])) == preset("tiny")
    cfg = train_config(parse(["train", "--preset", "full", "--crop", "none", "--augment", "none"]))
    assert cfg.crop is None and cfg.augment == ()


def test_train_flags_of_an_existing_run_override_its_config(tmp_path):
    from competition.config import save_config
    save_config(tmp_path / "r" / "config.json", preset("tiny", epochs=5))
    cfg = train_config(parse(["train", "--run", str(tmp_path / "r"), "--lr", "0.5"]))
    assert cfg == preset("tiny", epochs=5, lr=0.5)


def test_every_flag_of_before_keeps_its_name_dest_and_default():
    parsers = subcommands(build_parser())
    for command, flags in OLD_FLAGS.items():
        options = {s: a for a in parsers[command]._actions for s in a.option_strings}
        for flag, (dest, default) in flags.items():
            assert flag in options, f"{command} {flag}"
            assert options[flag].dest == RENAMED_DESTS.get((command, flag), dest), f"{command} {flag}"
            assert options[flag].default == default, f"{command} {flag}"


def test_the_old_command_lines_of_tests_make_and_kernels_still_parse():
    for line in ["--debug train --preset tiny --name mine --fold all --data d --cache memory --force",
                 "kernel build --task predict --preset tiny --run tiny --run wide@0:3 --user alice --out o",
                 "predict --run a --run b:3 --data d --out s.csv --tta none --refine net --folds 0,1 --shard 0/4",
                 "score --run a --fold 0 --data d --worst 0 --tune-threshold --threshold 0.4",
                 "refiner --run r --data d --test-only --learn-from training --steps 2",
                 "refiner --run r --data d --refiner-steps 2", "download --dest d", "extract --to d --data d",
                 "kernel output --task train --preset tiny --dest d",
                 "submit f.csv -m hello --sample s.csv", "folds --data d --k 3 --seed 1 --out f.csv",
                 "calibrate --out c.json --presets demo,tiny:16x32:2 --steps 2 --predict-batch 3"]:
        assert parse(line.split()).func


# --- help: defaults and an example ---------------------------------------------------------------
def test_every_subcommand_help_ends_with_an_example(capsys):
    for name in subcommands(build_parser()):
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out.rstrip().splitlines()
        assert out[-2] == "example:" and out[-1].startswith(f"  python -m competition {name} "), name


def test_every_option_help_shows_its_default():
    formatter = HelpFormatter("prog")
    for name, sp in subcommands(build_parser()).items():
        for a in sp._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or a.dest in ("help", "debug", "quiet"):
                continue
            has_default = a.default is not None and a.default is not False and not a.required
            text = formatter._expand_help(a)
            assert not has_default or "default" in text, f"{name} {a.option_strings}: {text}"
            if name == "train" and a.dest in {f.name for f in dataclasses.fields(TrainConfig)}:
                assert "default: the preset's" in text or "(default:" in text, a.option_strings


def test_tta_and_refine_choices_come_from_their_modules():
    from competition.config import REFINES
    from competition.base.tta import TTAS
    for sp in subcommands(build_parser()).values():
        for a in sp._actions:
            if a.dest == "tta":
                assert list(a.choices) == list(TTAS)
            if a.dest == "refine":
                assert list(a.choices) == list(REFINES)


# --- the option table and the package's shape -----------------------------------------------------
def test_the_option_table_in_the_guide_is_the_parsers():
    text = (ROOT / "docs" / "guide.md").read_text()
    assert current_section(text) == option_table(), "rewrite it: python -m competition.cli.table docs/guide.md"


def test_the_cli_package_stays_small():
    for path in sorted((ROOT / "competition" / "cli").glob("*.py")):
        source = path.read_text()
        assert source.count("\n") <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path.name}: {node.name}"


def test_calibrate_is_a_subcommand():
    a = parse(["calibrate", "--out", "c.json"])
    assert a.command == "calibrate" and a.timed_steps == 10 and a.predict_batch == 4 and not a.mixed_precision
    assert "tiny" not in a.presets.split(",") and "unet" in a.presets.split(",")


def test_a_former_spelling_works_and_says_the_new_one_in_one_line(tmp_path, capsys):
    """Every OLD_SPELLINGS entry is an option of its subcommand, parsed to the new one's dest; using it prints one
    note naming the new spelling (stdout: stderr keeps its one-line errors); the new spelling prints none."""
    from competition.cli.parser import OLD_SPELLINGS, old_spellings
    parsers = subcommands(build_parser())
    for (command, old), new in OLD_SPELLINGS.items():
        options = {s: a for a in parsers[command]._actions for s in a.option_strings}
        flag, _, value = old.partition(" ")  # "--folds all": an option with a value that has its own flag now
        assert flag in options and new in options and (value or options[old] is options[new]), (command, old, new)
        assert old_spellings(command, [*old.split(), "1"]) == [f"note: {command}'s {old} is now {new} (the old "
                                                               f"spelling still works)"]
        assert old_spellings(command, [new, "1"]) == [] and old_spellings("predict", [old, "1"]) == []
    assert main(["synth", "--out", str(tmp_path / "s"), "--cars", "2", "--test", "1", "--seed", "3"]) == 0
    out = capsys.readouterr()
    assert "note: synth's --seed is now --synth-seed" in out.out and out.err == ""


def test_every_number_a_command_takes_is_checked_as_it_is_read():
    """No option reads a bare int or float: each carries its range (cli.parser.Whole / Number), so no subcommand can
    forget to check one (NaN, a negative count, 10**12 epochs: one line before any work)."""
    from competition.cli.parser import Number, Whole
    bare = [f"{name} {' '.join(a.option_strings)}" for name, sp in subcommands(build_parser()).items()
            for a in sp._actions if a.type in (int, float)]
    assert not bare, bare
    checked = [a for sp in subcommands(build_parser()).values() for a in sp._actions
               if isinstance(a.type, (Whole, Number))]
    assert len(checked) > 30


@pytest.mark.parametrize("args, says", [
    (["predict", "--run", "r", "--out", "s.csv", "--batch", "-3"], "predict: --batch: -3 is not from 1 to 4096"),
    (["score", "--run", "r", "--worst=-1"], "score: --worst: -1 is not from 0 to 1000"),
    (["synth", "--cars", "0"], "synth: --cars: 0 is not from 2 to 10000"),
    (["train", "--lr", "nan"], "train: --lr: nan is not a finite number above 0 and at most 1"),
    (["train", "--dropout", "2"], "train: --dropout: 2 is not a finite number at least 0 and at most 0.99"),
    (["train", "--seed", "-1"], "train: --seed: -1 is not from 0 to 4294967295"),
    (["train", "--epochs", "1000000000000"], "train: --epochs: 1000000000000 is not from 1 to 10000"),
    (["plan", "--train-img-s", "nan", "--predict-img-s", "1"], "plan: --train-img-s: nan is not a finite number"),
    (["kernel", "push", "--max-running", "0"], "kernel: --max-running: 0 is not from 1 to 10"),
    (["predict", "--run", "r", "--out", "s.csv", "--threshold", "1"], "predict: --threshold: 1 is not a finite"),
])
def test_a_number_out_of_range_is_one_line_before_any_work(args, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, main(args))
    assert err.startswith(f"error: {says}"), err
    assert not list(tmp_path.iterdir())
