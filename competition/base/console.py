"""The console: progress bars (tqdm with rate and ETA on a terminal, sparse lines otherwise, nothing with --quiet),
lines for the user, and TensorFlow's start-up chatter kept off stderr.

TensorFlow's C++ start-up lines (oneDNN, "could not find cuda drivers", cuInit) are printed before its log
level applies, so they would break the CLI's one-line errors. Importing it up front to silence them cost
every command several seconds, even one that then stops at a misspelt option. Instead, `install()` puts a
finder first on `sys.meta_path`: the first import of `tensorflow` or `keras`, wherever in the package it
happens, runs with file descriptor 2 captured (and TensorFlow's GPU probe with it). The capture is shown
again if that import fails (not when it is interrupted: Ctrl-C is the user's, not an import failure). The finder
removes itself at once, so every later import is untouched.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Iterable, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
QUIET = False


def set_quiet(quiet: bool) -> None:
    global QUIET
    QUIET = quiet


def bar(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "img",
        **kwargs) -> tqdm:
    """A tqdm bar on stderr; refreshes rarely (every 30 s) when stderr is not a terminal."""
    from tqdm import tqdm  # here: 40 ms to import, and `say` (most commands' only use of this module) needs none
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=QUIET, file=sys.stderr,
                mininterval=0.5 if tty else 30.0, dynamic_ncols=tty, ascii=not tty, **kwargs)


def say(message: str) -> None:
    """A line for the user (stdout), unless quiet."""
    if not QUIET:
        print(message, flush=True)


# --- TensorFlow's start-up chatter -------------------------------------------------------------------------
NOISY = ("tensorflow", "keras")


@contextlib.contextmanager
def stderr_captured() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file inside the block; replay it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except KeyboardInterrupt:  # Ctrl-C during start-up: the CLI says "interrupted", TensorFlow's lines say nothing
            raise
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a noisy package, run with stderr captured."""

    def __init__(self, real: importlib.abc.Loader):
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.real  # the package sees its own loader, as without this hook
        if module.__spec__ is not None:
            module.__spec__.loader = self.real
        with stderr_captured():
            self.real.exec_module(module)
            tf = sys.modules.get("tensorflow")
            if tf is not None and hasattr(tf, "config"):
                tf.config.list_logical_devices("GPU")  # the CUDA probe prints too
                # and its Python logger's warnings (tf.function retracing when scoring several models,
                # deprecations) say nothing a user can act on; --debug keeps them
                tf.get_logger().setLevel("ERROR")


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name not in NOISY:
            return None
        uninstall()
        spec = importlib.util.find_spec(name)  # the finders behind this one
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietFirstImport()


def install() -> None:
    """Capture stderr during the first import of TensorFlow or Keras (nothing to do once either is imported)."""
    if not any(n in sys.modules for n in NOISY) and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
