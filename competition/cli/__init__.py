"""The one CLI: `python -m competition <command>`. argparse lives only in this package: options shared by
several subcommands are declared once (options.py), train's flags are generated from TrainConfig
(train_flags.py), and each stage's subcommands (datasets, training, inference, scoring, kernel, costs) declare
their flags beside a thin handler that calls a typed function of the stage's module. User errors, the parser's
own included, are one line with exit code 2 (`--debug` shows the traceback)."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from ..base.errors import UserError  # noqa: E402
from .clean import add_clean  # noqa: E402
from .runs import add_runs  # noqa: E402
from .costs import add_bench, add_calibrate, add_plan  # noqa: E402
from .datasets import add_download, add_extract, add_folds_command, add_info, add_synth  # noqa: E402
from .inference import add_made_as, add_merge, add_predict, add_submit, add_validate  # noqa: E402
from .kernel import add_kernel  # noqa: E402
from .parser import PROG, HelpFormatter, ParseError, Parser, command_adder, global_flags, old_spellings  # noqa: E402
from .scoring import add_cv, add_score  # noqa: E402
from .training import add_refiner, add_train  # noqa: E402

# Each adds one subcommand (its flags, handler, help and example), in the order `--help` lists them.
SUBCOMMANDS = (add_synth, add_info, add_folds_command, add_download, add_extract, add_train, add_predict, add_merge,
               add_made_as, add_validate, add_submit, add_score, add_cv, add_refiner, add_kernel, add_bench, add_plan,
               add_calibrate, add_runs, add_clean)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = Parser(prog=PROG, description="Carvana Image Masking Challenge toolkit.", formatter_class=HelpFormatter,
               epilog=f"example:\n  {PROG} train --preset demo --run demo --fold 0 --data data/synthetic")
    global_flags(p, False)
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")
    add = command_adder(sub)
    for add_command in SUBCOMMANDS:
        add_command(add)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line read, or a ParseError (one line) for what argparse cannot read."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        raise ParseError(args.command, f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    from ..base.timelimit import process_age
    # when the command began: the process's start where it is the process (a budget counts the imports too)
    started = time.monotonic() - (process_age() if argv is None else 0.0)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse(argv)
    except ParseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    from ..base.console import install, say, set_quiet
    args.started = started
    set_quiet(args.quiet)
    for line in old_spellings(args.command, argv):
        say(line)
    if not args.debug:  # TensorFlow's start-up lines off stderr, whenever (if ever) a command imports it
        install()
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refused (permissions, a full disk, a folder where a file was asked)
        if args.debug or not (e.filename or e.errno):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e} (errno {errno.errorcode.get(e.errno, e.errno)}): nothing was "
              f"half-written; mend that path (permissions, free space) or pass another, and run the same command "
              f"again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    return 0
