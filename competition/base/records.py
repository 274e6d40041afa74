"""Records the toolkit reads back (JSON files it wrote), checked for their shape before anything trusts them.

A record kind is a `Shape`: the keys it must have, those it may have, and the type of each value. `load` reads a
JSON file and checks it against its shape; whatever is wrong (not JSON, empty, a list where an object was written,
a key missing, a value of another type, a number that is not finite) is the same one line as a damaged file: its
path, its size, what is wrong, and the command that makes it again. Nothing is deleted or rewritten on the strength
of a record that did not pass: callers read first, act after.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UserError
from .fileio import damaged, read_json

# A value's kind: one of these names, a Shape (a nested object), a ListOf(kind), or a tuple of kinds (any of them;
# None in it: null allowed).
KINDS = ("int", "count", "number", "finite", "str", "bool", "list", "dict", "any")


@dataclass(frozen=True)
class ListOf:
    """A list whose every item is of `kind`."""

    kind: Any


def _is(kind: Any, value: Any) -> bool:
    """Whether `value` is of `kind` (see KINDS)."""
    if isinstance(kind, ListOf):
        return isinstance(value, list) and all(_is(kind.kind, v) for v in value)
    if isinstance(kind, tuple):
        return any(_is(k, value) for k in kind)
    if kind is None:
        return value is None
    if isinstance(kind, Shape):
        return isinstance(value, dict) and kind.problem(value) is None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"int": isinstance(value, int) and not isinstance(value, bool),
            "count": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "number": number, "finite": number and math.isfinite(value),
            "str": isinstance(value, str), "bool": isinstance(value, bool), "list": isinstance(value, list),
            "dict": isinstance(value, dict), "any": True}[kind]


def _name(kind: Any) -> str:
    if isinstance(kind, ListOf):
        return f"a list of {_name(kind.kind)}"
    if isinstance(kind, tuple):
        return " or ".join(_name(k) for k in kind)
    if kind is None:
        return "null"
    if isinstance(kind, Shape):
        return f"an object ({kind.what})"
    return {"int": "a whole number", "count": "a whole number >= 0", "number": "a number",
            "finite": "a finite number", "str": "a string", "bool": "true or false", "list": "a list",
            "dict": "an object", "any": "anything"}[kind]


@dataclass(frozen=True)
class Shape:
    """What one kind of record holds: required keys, optional keys, each with its kind; others allowed or not."""

    what: str
    required: dict[str, Any] = field(default_factory=dict)
    optional: dict[str, Any] = field(default_factory=dict)
    others: bool = True          # keys of neither list are allowed (written by a newer toolkit, say)
    check: Callable[[dict], str | None] | None = None  # a rule across keys: what is wrong, or None

    def problem(self, record: Any) -> str | None:
        """What is wrong with `record` (None: nothing)."""
        if not isinstance(record, dict):
            return f"{type(record).__name__} where {self.what} (a JSON object) was written"
        for key, kind in self.required.items():
            if key not in record:
                return f"no {key!r}"
            if not _is(kind, record[key]):
                return f"{key} is {_shown(record[key])}, not {_name(kind)}"
        for key, kind in self.optional.items():
            if key in record and not _is(kind, record[key]):
                return f"{key} is {_shown(record[key])}, not {_name(kind)}"
        if not self.others:
            unknown = sorted(set(record) - set(self.required) - set(self.optional))
            if unknown:
                return f"unknown key {unknown[0]!r}"
        return self.check(record) if self.check else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked(record: Any, shape: Shape, path: str | os.PathLike, rebuild: str) -> dict:
    """`record` (read from `path`) when it has `shape`, else the damaged-file line with `rebuild`."""
    problem = shape.problem(record)
    if problem is not None:
        raise damaged(path, problem, rebuild)
    return record


def load(path: str | os.PathLike, shape: Shape, rebuild: str) -> dict:
    """Read a JSON record and check its shape: one line naming the file, its size, what is wrong and `rebuild`."""
    try:
        record = read_json(path, rebuild)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}); {rebuild}") from e
    return checked(record, shape, path, rebuild)
