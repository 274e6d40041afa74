"""The argparse machinery every subcommand shares: one-line errors, values that start with '-', defaults and an
example in each help, --debug/--quiet anywhere on the line."""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Callable

from ..base.errors import UserError

PROG = "python -m competition"


class ParseError(UserError):
    """A command line argparse cannot read: one line, "<subcommand>: <what>; see --help"."""

    def __init__(self, command: str | None, message: str):
        message = re.sub(r"^argument ", "", message)  # "argument --steps: invalid int value" -> "--steps: ..."
        message = re.sub(r"^<command>: invalid choice", "unknown command", message)
        super().__init__(f"{command + ': ' if command else ''}{message}; see --help")


def takes_dash_value(action: argparse.Action) -> bool:
    """Whether an option's value may start with '-': a number or a duration (`--time-limit -5m` reaches the code
    that rejects it, where argparse would read -5m as an unknown flag)."""
    return (bool(action.option_strings) and action.nargs is None and action.const is None
            and getattr(action.type, "dash_value", False))


def dash_value(func: Callable[[str], object]) -> Callable[[str], object]:
    """Mark an option's type as one whose values may start with '-' (see takes_dash_value)."""
    func.dash_value = True
    return func


class Whole:
    """An option's type: a whole number within [low, high], checked as the command line is read (a typo, a
    negative count or 10**12 epochs is one line before any work)."""

    dash_value = True  # `--batch -3` reaches this check rather than being read as an unknown flag

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self.__name__ = "whole number"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{value} is not from {self.low} to {self.high}")
        return value


class Number:
    """An option's type: a finite number within [low, high] ((low, high] when low_open)."""

    dash_value = True

    def __init__(self, low: float, high: float, low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.__name__ = "number"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if (not math.isfinite(value) or value < self.low or value > self.high or (self.low_open and value == self.low)
                or (self.high_open and value == self.high)):
            span = (f"{'above' if self.low_open else 'at least'} {self.low:g} and "
                    f"{'below' if self.high_open else 'at most'} {self.high:g}")
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {span}")
        return value


@dash_value
def duration(text: str) -> str:
    """A duration or size as typed (e.g. 11h30m, 20GB): the command parses it, with its own one-line error."""
    return text


# Former spellings, still accepted, each with one line saying the new one: (subcommand, old) -> new. A subcommand
# declares the old spelling beside the new one (add_argument(new, old, ...)); this table is what says it is old.
OLD_SPELLINGS: dict[tuple[str, str], str] = {
    ("download", "--dest"): "--out", ("extract", "--to"): "--out", ("kernel", "--dest"): "--out",
    ("train", "--name"): "--run", ("kernel", "--name"): "--run", ("folds", "--seed"): "--fold-seed",
    ("synth", "--seed"): "--synth-seed", ("refiner", "--steps"): "--refiner-steps", ("plan", "--gpu"): "--accelerator",
    ("refiner", "--learn-from"): "--refiner-from", ("train", "--learn-from"): "--refiner-from",
    ("calibrate", "--steps"): "--timed-steps", ("kernel", "--folds all"): "--all-folds",
}


def old_spellings(command: str | None, argv: list[str]) -> list[str]:
    """One line for each former spelling `argv` uses: "note: refiner's --steps is now --refiner-steps"."""
    used = {a.split("=", 1)[0] for a in argv if a.startswith("--")} | {f"{a} {b}" for a, b in zip(argv, argv[1:])}
    return [f"note: {command}'s {old} is now {new} (the old spelling still works)"
            for (cmd, old), new in OLD_SPELLINGS.items() if cmd == command and old in used]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a ParseError (one line, no usage block) and whose numeric and duration
    options take values that start with '-'."""

    def error(self, message: str):  # argparse calls this for every error it finds
        raise ParseError(self.command, message)

    @property
    def command(self) -> str | None:
        """The subcommand this parser reads (None: the top level)."""
        return self.prog[len(PROG):].strip() or None

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._join_dash_values(args), namespace)

    def _join_dash_values(self, args: list[str]) -> list[str]:
        """`--time-limit -5m` -> `--time-limit=-5m` for this parser's own numeric and duration options."""
        out: list[str] = []
        i = 0
        while i < len(args):
            action = self._option_string_actions.get(args[i])
            if (action is not None and takes_dash_value(action) and i + 1 < len(args) and args[i + 1].startswith("-")
                    and args[i + 1] not in self._option_string_actions and args[i + 1] != "--"):
                out.append(f"{args[i]}={args[i + 1]}")
                i += 2
                continue
            out.append(args[i])
            i += 1
        return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's help ends with its default (unless it says it already or has none); the epilog's example
    keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
        return f"{text} (default: {str(shown).replace('%', '%%')})".lstrip()


def global_flags(p: argparse.ArgumentParser, default) -> None:
    """--debug and --quiet: on the top level (default False) and on every subcommand (default SUPPRESS, so a
    subcommand that is not given them keeps what the top level read)."""
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks for errors")
    p.add_argument("--quiet", action="store_true", default=default, help="no progress bars or chatter")


AddCommand = Callable[..., argparse.ArgumentParser]


def command_adder(sub: argparse._SubParsersAction) -> AddCommand:
    """add(name, func, help, example): a subcommand that runs func(args), whose help ends with the example."""
    common = argparse.ArgumentParser(add_help=False)
    global_flags(common, argparse.SUPPRESS)

    def add(name: str, func, help: str, example: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common], formatter_class=HelpFormatter,
                            epilog=f"example:\n  {PROG} {name} {example}")
        sp.set_defaults(func=func)
        return sp
    return add


class Once(argparse.Action):
    """An option that may be given once: a second `--run` is an error, never silently the one used."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}): this command "
                         f"takes one run (predict, score and cv blend several)")
        setattr(namespace, self.dest, values)
