"""Rule files from the command line: check them, explain what they do with a series."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicomnode.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    config_option,
    existing_index,
    print_help,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="check rule files; explain what they do with a series")
    rules_sub = rules.add_subparsers(title="rules commands", metavar="COMMAND")
    rules_check = rules_sub.add_parser(
        "check", help="validate rule files: every problem as file:line: key: message; exit 2"
    )
    rules_check.add_argument(
        "dir", nargs="?", type=Path, default=None, help="rules folder (default: rules_dir)"
    )
    config_option(rules_check)
    rules_check.set_defaults(run=rules_check_command)
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
    config_option(explain)
    explain.set_defaults(run=rules_explain_command)
    rules.set_defaults(run=lambda _a: print_help(rules))


def load_rules(args: argparse.Namespace, folder: Path | None) -> Any:
    from dicomnode.config import load_config
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.pipeline.findings import pipeline_findings
    from dicomnode.rules import load_rules

    config = load_config(args.config)
    _models, pipelines = all_definitions(config.models, config.pipelines, str(args.config))
    # Without --config, checking against the empty default would refuse every forward_to.
    destinations = tuple(config.destinations) if args.config is not None else None
    ruleset = load_rules(
        folder or config.rules_dir,
        destinations=destinations,
        pipelines=pipeline_findings(pipelines),
    )
    if destinations is None:
        print("note: destination names were not checked (give --config)", file=sys.stderr)
    return ruleset


def rules_check_command(args: argparse.Namespace) -> int:
    from dicomnode.rules import RulesError

    try:
        ruleset = load_rules(args, args.dir)
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


def rules_explain_command(args: argparse.Namespace) -> int:
    from dicomnode.rules import explain, read_series_attributes

    ruleset = load_rules(args, args.rules)
    findings = None
    if args.series is not None:
        attributes, findings = _stored_series(args, ruleset)
        found = [attributes]
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
    texts = [explain(ruleset, attributes, findings=findings) for attributes in found]
    print("\n".join(texts), end="")
    return EXIT_OK


def _stored_series(args: argparse.Namespace, ruleset: Any) -> tuple[Any, Any]:
    """A stored series' attributes, and per pipeline what its latest done job found."""
    from dicomnode.config import load_config
    from dicomnode.errors import DicomNodeError
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.pipeline.findings import pipeline_findings, stored_findings
    from dicomnode.pipeline.jobs import JobQueue
    from dicomnode.routing.router import stored_series_attributes
    from dicomnode.store.index import Index
    from dicomnode.store.spool import Spool

    config = load_config(args.config)
    index = Index(existing_index(config))
    try:
        index.open()
        series = index.find_series(args.series)
        if series is None:
            raise DicomNodeError(f"no stored series with UID {args.series}")
        spool = Spool(config.spool_path, config.spool_prefix)
        _models, pipelines = all_definitions(config.models, config.pipelines, str(args.config))
        catalog = pipeline_findings(pipelines)
        return (
            stored_series_attributes(index, spool, series.id, series.version, ruleset),
            stored_findings(JobQueue(index.database), series.id, catalog),
        )
    finally:
        index.close()
