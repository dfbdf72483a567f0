"""The ``dicomnode`` command: parses arguments and calls the node; no logic of its own.

Exit codes: 0 success; 1 the operation failed (a peer refused, a file was not stored);
2 bad usage or an invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


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


def _is_usage_error(exc: Exception) -> bool:
    from dicomnode.errors import AddressError, ConfigError

    return isinstance(exc, ConfigError | AddressError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomnode",
        description="A DICOM node beside the PACS: receive, route, run models, send back.",
        epilog="Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.set_defaults(run=_version_or_help(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the node (works with no configuration at all)")
    _config_option(serve)
    serve.set_defaults(run=_serve)

    demo = sub.add_parser(
        "demo", help="the whole flow on one machine: phantoms in, SEG and SR back (no setup)"
    )
    demo.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    demo.set_defaults(run=_demo)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_sub.add_parser("check", help="validate the configuration; exit 2 on errors")
    _config_option(check)
    check.set_defaults(run=_config_check)
    show = config_sub.add_parser("show", help="print the effective configuration as YAML")
    _config_option(show)
    show.set_defaults(run=_config_show)
    config.set_defaults(run=lambda _a: _help(config))

    echo = sub.add_parser(
        "echo", help="C-ECHO a DICOM node: AE@HOST:PORT or a configured destination's name"
    )
    echo.add_argument("address", help="AE@HOST:PORT, or NAME from destinations")
    echo.add_argument("--calling-ae", default=None, help="our AE title (default node.ae_title)")
    echo.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    _config_option(echo)
    echo.set_defaults(run=_echo)

    rules = sub.add_parser("rules", help="check rule files; explain what they do with a series")
    rules_sub = rules.add_subparsers(title="rules commands", metavar="COMMAND")
    rules_check = rules_sub.add_parser(
        "check", help="validate rule files: every problem as file:line: key: message; exit 2"
    )
    rules_check.add_argument(
        "dir", nargs="?", type=Path, default=None, help="rules folder (default: rules_dir)"
    )
    _config_option(rules_check)
    rules_check.set_defaults(run=_rules_check)
    explain = rules_sub.add_parser(
        "explain",
        help="a DICOM file/folder or a stored series: its attributes, the rule that "
        "matches and why each other rule does not",
    )
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("path", nargs="?", type=Path, help="a DICOM file or folder")
    target.add_argument("--series", metavar="SERIES_UID", help="a series stored by the node")
    explain.add_argument(
        "--rules", type=Path, default=None, help="rules folder (default: rules_dir)"
    )
    explain.add_argument("--calling-ae", help="the calling AE title to assume (files only)")
    explain.add_argument("--called-ae", help="the called AE title to assume (files only)")
    explain.add_argument("--source-host", help="the sender's host to assume (files only)")
    _config_option(explain)
    explain.set_defaults(run=_rules_explain)
    rules.set_defaults(run=lambda _a: _help(rules))

    jobs = sub.add_parser("jobs", help="list sends in the outbox (newest first)")
    _config_option(jobs)
    jobs.add_argument(
        "--state", choices=["pending", "sending", "done", "failed"], help="only this state"
    )
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    jobs.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    jobs.set_defaults(run=_jobs)

    retry = sub.add_parser("retry", help="requeue a failed send now (its maximum age restarts)")
    _config_option(retry)
    retry.add_argument("job_id", type=int, help="the id shown by 'dicomnode jobs'")
    retry.set_defaults(run=_retry)

    send = sub.add_parser("send", help="C-STORE files and folders (recursive) to AE@HOST:PORT")
    send.add_argument("paths", nargs="+", type=Path, help="files or folders")
    send.add_argument("--to", required=True, help="AE@HOST:PORT")
    send.add_argument("--calling-ae", default="DICOMNODE", help="our AE title (default DICOMNODE)")
    send.add_argument("--quiet", action="store_true", help="no progress bar, summary only")
    send.set_defaults(run=_send)

    series = sub.add_parser("series", help="list received series")
    _config_option(series)
    series.add_argument("--json", action="store_true", help="machine-readable output")
    series.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    series.set_defaults(run=_series)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML configuration (default: built-in defaults)"
    )


def _version_or_help(parser: argparse.ArgumentParser) -> Command:
    def run(args: argparse.Namespace) -> int:
        if args.version:
            from dicomnode import __version__

            print(__version__)
            return EXIT_OK
        return _help(parser)

    return run


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.logs import configure_logging
    from dicomnode.node import Node

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    Node(config).run_until_signalled()
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from dicomnode.demo import run_demo
    from dicomnode.logs import configure_logging

    configure_logging("warning", "console")
    return run_demo(args.workdir)


def _config_check(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.runners import ModelHost

    config = load_config(args.config)
    source = args.config or "built-in defaults"
    models, pipelines = all_definitions(config.models, config.pipelines, str(source))
    # A model that cannot load fails here, not on the first study.
    with ModelHost(models, config.base_dir) as host:
        host.load()
    print(f"{source}: {len(pipelines)} pipelines and {len(models)} models load")
    if config.rules_dir.is_dir():
        _load_rules(args, None)
        print(f"{config.rules_dir}: rules valid")
    print(
        f"{source}: OK (AE {config.node.ae_title} on port {config.node.port}, "
        f"storage {config.storage.path}, {len(config.destinations)} destinations)"
    )
    return EXIT_OK


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from dicomnode.config import load_config

    config = load_config(args.config)
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return EXIT_OK


def _echo(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.dicom.address import DicomAddress, parse_address
    from dicomnode.dicom.scu import ScuSettings, echo
    from dicomnode.dicom.status import describe, is_success
    from dicomnode.errors import AddressError

    config = load_config(args.config)
    calling_ae = args.calling_ae or config.node.ae_title
    if "@" in args.address:
        address = parse_address(args.address)
    elif (destination := config.destinations.get(args.address)) is not None:
        address = DicomAddress(destination.ae_title, destination.host, destination.port)
        calling_ae = args.calling_ae or destination.calling_ae or calling_ae
    else:
        known = ", ".join(sorted(config.destinations)) or "none configured"
        raise AddressError(
            f"{args.address!r} is neither AE@HOST:PORT nor a destination (known: {known})"
        )
    settings = ScuSettings(
        calling_ae=calling_ae,
        connect_timeout_seconds=args.timeout,
        network_timeout_seconds=args.timeout,
    )
    result = echo(address, settings)
    verdict = "OK" if is_success(result.status) else describe(result.status)
    print(f"{address}: C-ECHO {verdict} (0x{result.status:04X}) in {result.seconds * 1000:.0f} ms")
    return EXIT_OK if is_success(result.status) else EXIT_FAILED


def _send(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from dicomnode.dicom.address import parse_address
    from dicomnode.dicom.scu import (
        FileResult,
        ScuSettings,
        SendableFile,
        SkippedFile,
        find_files,
        inspect_file,
        send_files,
    )

    address = parse_address(args.to)
    console = Console(stderr=True)
    sendable: list[SendableFile] = []
    skipped: list[SkippedFile] = []
    for path in find_files(args.paths):
        found = inspect_file(path)
        (sendable if isinstance(found, SendableFile) else skipped).append(found)  # type: ignore[arg-type]
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item.path}: {item.reason}")
    if not sendable:
        console.print("nothing to send")
        return EXIT_FAILED
    total = sum(item.size for item in sendable)
    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        task = progress.add_task("send", total=total)
        files = progress.add_task("files", total=len(sendable), visible=False)

        def advance(_result: FileResult, sent: int) -> None:
            progress.advance(task, sent)
            progress.advance(files, 1)

        results = send_files(sendable, address, ScuSettings(calling_ae=args.calling_ae), advance)
    failed = [r for r in results if not r.ok]
    for result in failed:
        console.print(f"[red]failed[/] {result.path}: {result.note}")
    ok = len(results) - len(failed)
    print(f"{address}: {ok} of {len(results)} sent, {len(failed)} failed, {len(skipped)} skipped")
    return EXIT_OK if not failed else EXIT_FAILED


def _series(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.store.index import Index

    config = load_config(args.config)
    index = Index(config.database_url)
    try:
        index.open()
        rows = index.list_series(limit=args.limit)
    finally:
        index.close()
    if args.json:
        print(json.dumps([_series_json(row) for row in rows], indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    header = ("series UID", "modality", "description", "instances", "version", "state", "last")
    lines = [
        (
            row.series_uid,
            row.modality or "",
            row.description or "",
            str(row.instance_count),
            str(row.version),
            row.state,
            row.last_arrival_at.isoformat(timespec="seconds"),
        )
        for row in rows
    ]
    console = Console()
    if not console.is_terminal:
        # Piped into grep or a file: whole lines, tab-separated, never wrapped.
        for line in (header, *lines):
            print("\t".join(line))
        return EXIT_OK
    table = Table(title=f"{len(rows)} series")
    for column in header:
        table.add_column(column, overflow="fold")
    for line in lines:
        table.add_row(*line)
    console.print(table)
    return EXIT_OK


def _load_rules(args: argparse.Namespace, folder: Path | None) -> Any:
    from dicomnode.config import load_config
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.rules import load_rules

    config = load_config(args.config)
    _models, pipelines = all_definitions(config.models, config.pipelines, str(args.config))
    # Without --config, checking against the empty default would refuse every forward_to.
    destinations = tuple(config.destinations) if args.config is not None else None
    ruleset = load_rules(folder or config.rules_dir, destinations=destinations, pipelines=pipelines)
    if destinations is None:
        print("note: destination names were not checked (give --config)", file=sys.stderr)
    return ruleset


def _rules_check(args: argparse.Namespace) -> int:
    from dicomnode.rules import RulesError

    try:
        ruleset = _load_rules(args, args.dir)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' * (count != 1)}: the rules are not valid", file=sys.stderr)
        return EXIT_USAGE
    count = len(ruleset)
    print(
        f"{args.dir or 'rules_dir'}: OK ({count} rule{'s' * (count != 1)} in "
        f"{len(ruleset.files)} files, version {ruleset.version[:12]})"
    )
    return EXIT_OK


def _rules_explain(args: argparse.Namespace) -> int:
    from dicomnode.rules import explain, read_series_attributes

    ruleset = _load_rules(args, args.rules)
    if args.series is not None:
        found = [_stored_series_attributes(args, ruleset)]
    elif not args.path.exists():
        print(f"dicomnode: {args.path}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    else:
        found = read_series_attributes(
            [args.path],
            ruleset.keywords(),
            calling_ae=args.calling_ae,
            called_ae=args.called_ae,
            source_host=args.source_host,
        )
    if not found:
        print(f"dicomnode: {args.path}: no DICOM series found", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(explain(ruleset, attributes) for attributes in found), end="")
    return EXIT_OK


def _stored_series_attributes(args: argparse.Namespace, ruleset: Any) -> Any:
    from dicomnode.config import load_config
    from dicomnode.errors import DicomNodeError
    from dicomnode.routing.router import stored_series_attributes
    from dicomnode.store.index import Index
    from dicomnode.store.spool import Spool

    config = load_config(args.config)
    index = Index(config.database_url)
    try:
        index.open()
        series = index.find_series(args.series)
        if series is None:
            raise DicomNodeError(f"no stored series with UID {args.series}")
        spool = Spool(config.spool_path)
        return stored_series_attributes(index, spool, series.id, series.version, ruleset)
    finally:
        index.close()


def _jobs(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.outbox.queue import OutboxQueue
    from dicomnode.store.database import Database

    database = Database(load_config(args.config).database_url)
    try:
        database.create_schema()
        sends = OutboxQueue(database).list_sends(args.state, args.limit)
    finally:
        database.close()
    if args.json:
        print(json.dumps([_series_json(send) for send in sends], indent=2))
        return EXIT_OK
    header = ("id", "kind", "destination", "series", "state", "sent", "attempts", "reason")
    print("\t".join(header))
    for send in sends:
        line = (
            str(send.id),
            "send",
            send.destination,
            f"{send.series_id} v{send.series_version}",
            send.state,
            f"{send.sent_count}/{send.instance_count}",
            str(send.attempts),
            send.reason or "",
        )
        print("\t".join(line))
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    import getpass

    from dicomnode.admin import AuditLog
    from dicomnode.config import load_config
    from dicomnode.outbox.queue import OutboxQueue
    from dicomnode.store.completion import utc_now
    from dicomnode.store.database import Database

    database = Database(load_config(args.config).database_url)
    try:
        database.create_schema()
        queue = OutboxQueue(database)
        before = queue.get(args.job_id)
        summary = queue.retry(args.job_id, utc_now())
        current = queue.get(args.job_id) if summary is None else summary
        if summary is not None:
            # Every change made through the CLI or the API is in the audit trail.
            AuditLog(database).record(
                utc_now(),
                f"{getpass.getuser()} (cli)",
                "job.retry",
                f"send-{summary.id}",
                {"previous_reason": before.reason if before else None},
            )
    finally:
        database.close()
    if summary is None:
        state = "does not exist" if current is None else f"is {current.state}, not failed"
        print(f"dicomnode: job {args.job_id} {state}: nothing to retry", file=sys.stderr)
        return EXIT_FAILED
    print(f"job {summary.id}: requeued to {summary.destination} (the node sends it within seconds)")
    return EXIT_OK


def _series_json(row: object) -> dict[str, object]:
    from dataclasses import asdict
    from datetime import datetime

    data = asdict(row)  # type: ignore[call-overload]  # a SeriesSummary dataclass
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
