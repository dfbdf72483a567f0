"""What every command shares: exit codes, the --config option, printing help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicomnode.config import Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML configuration (default: built-in defaults)"
    )


def print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def existing_index(config: Config) -> str:
    """The index's URL, for commands that read what a node stored.

    A SQLite index that is not there is said so in one line (ConfigError: exit 2),
    instead of a new, empty database being made where the reader looked.
    """
    from dicomnode.errors import ConfigError

    url = config.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise ConfigError(
                f"no index at {path}: no node has stored anything with this storage.path; "
                "give the node's configuration with --config"
            )
    return url


def moment(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone, this machine's local time (as
    ``series`` prints times). For ``--since`` options: argparse exits 2 with the reason."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-12-07 or 2026-12-07T14:00"
        ) from None
    return when.astimezone() if when.tzinfo is None else when
