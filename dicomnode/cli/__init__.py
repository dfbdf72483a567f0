"""The ``dicomnode`` command: parses arguments and calls the node; no logic of its own.

::

    common.py          exit codes, --config, help
    node_commands.py   serve, demo, config check, config show
    dicom_commands.py  echo, send
    rules_commands.py  rules check, rules explain
    store_commands.py  series, jobs, retry
    reroute_commands.py   reroute (stored series, by the rules in force now)
    export_commands.py    export (datasets for research and training)
    evaluate_commands.py  evaluate
    shadow_commands.py    shadow report, shadow end

Each module registers its own subcommands, so a command's options sit beside its code.
Heavy imports (the node, TensorFlow, SQLAlchemy) happen inside the commands, so that
``dicomnode --help`` answers at once.

Exit codes: 0 success; 1 the operation failed (a peer refused, a file was not stored);
2 bad usage or an invalid configuration (a storage another node holds is one).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dicomnode.cli import (
    dicom_commands,
    evaluate_commands,
    export_commands,
    node_commands,
    reroute_commands,
    rules_commands,
    shadow_commands,
    store_commands,
)
from dicomnode.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, print_help

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "run", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    from dicomnode.errors import DicomNodeError

    try:
        return command(args)
    except DicomNodeError as exc:
        print(f"dicomnode: {exc}", file=sys.stderr)
        return EXIT_USAGE if _is_usage_error(exc) else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        # The index database is down, unreachable or unreadable: say so in one line.
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        print(f"dicomnode: the index database cannot be used: {first}", file=sys.stderr)
        return EXIT_FAILED


def _is_database_error(exc: Exception) -> bool:
    """SQLAlchemy's errors, without importing SQLAlchemy where no command needed it."""
    return type(exc).__module__.startswith("sqlalchemy.")


def _is_usage_error(exc: Exception) -> bool:
    # Another node on the same storage is an operator's mistake, like a wrong setting.
    from dicomnode.errors import AddressError, ConfigError, StorageInUseError

    return isinstance(exc, ConfigError | AddressError | StorageInUseError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomnode",
        description="A DICOM node beside the PACS: receive, route, run models, send back.",
        epilog="Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.set_defaults(run=_version_or_help(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (
        node_commands,
        dicom_commands,
        rules_commands,
        store_commands,
        reroute_commands,
        export_commands,
        evaluate_commands,
        shadow_commands,
    ):
        module.register(sub)
    return parser


def _version_or_help(parser: argparse.ArgumentParser) -> Command:
    def run(args: argparse.Namespace) -> int:
        if args.version:
            from dicomnode import __version__

            print(__version__)
            return EXIT_OK
        return print_help(parser)

    return run
