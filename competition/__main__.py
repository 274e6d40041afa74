"""`python -m competition <command>`: the CLI, competition/cli/."""
import sys

from .cli import build_parser, main  # noqa: F401 - build_parser: what kernels' run.py and old callers import

if __name__ == "__main__":
    sys.exit(main())
