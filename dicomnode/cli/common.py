"""What every command shares: exit codes, the --config option, printing help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML configuration (default: built-in defaults)"
    )


def print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE
