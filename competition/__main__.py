"""`python -m competition <command>`: the CLI, competition/cli/."""
import sys

from .cli import build_parser, main

__all__ = ["build_parser", "main"]  # what kernels' run.py and callers written before competition/cli/ import

if __name__ == "__main__":
    sys.exit(main())
