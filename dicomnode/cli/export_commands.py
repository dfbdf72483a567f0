"""``dicomnode export``: series the node holds (or a folder's) as a de-identified dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicomnode.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, config_option, existing_index


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser(
        "export",
        help="export selected series as de-identified DICOM, NIfTI and/or 8-bit images, "
        "preprocessed by a pipeline's steps, with a manifest (docs/datasets.md)",
        description="Export series the node holds (or found under --from) as a training "
        "set: one item folder per series and manifest.csv. Resumable: run it again with the "
        "same options to finish an interrupted export.",
    )
    config_option(export)
    export.add_argument("--out", type=Path, required=True, help="the export folder")
    export.add_argument(
        "--from",
        dest="folders",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="read series from DICOM files and folders instead of the node's storage",
    )
    export.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="Keyword=VALUE, Keyword!=VALUE, Keyword~REGEX, Keyword>=N, Keyword<=N; "
        "repeat: all must hold",
    )
    export.add_argument(
        "--list",
        dest="study_list",
        type=Path,
        metavar="FILE",
        help=".xlsx or .csv with a SeriesInstanceUID, StudyInstanceUID or AccessionNumber column",
    )
    export.add_argument(
        "--series", action="append", default=[], metavar="UID", help="a series (repeatable)"
    )
    export.add_argument(
        "--to",
        default="dicom,nifti",
        help="formats, comma-separated: dicom, nifti, png, jpeg, gif (default dicom,nifti)",
    )
    export.add_argument(
        "--steps",
        metavar="pipeline:NAME|FILE",
        help="preprocess volumes by a pipeline's steps, or by a YAML list of steps",
    )
    export.add_argument(
        "--retain-dates",
        action="store_true",
        help="keep dates and times (PS3.15 Retain Longitudinal Temporal Information)",
    )
    export.add_argument(
        "--clean-descriptors",
        action="store_true",
        help="keep descriptions, cleaned of identifiers (PS3.15 Clean Descriptors)",
    )
    export.add_argument(
        "--mapping",
        type=Path,
        metavar="FILE",
        help="keep the pseudonym mapping in FILE (re-identifies: protect it; "
        "docs/deidentification.md)",
    )
    export.add_argument(
        "--keep-key",
        action="store_true",
        help="keep the pseudonym key after the export, so that it can grow later",
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(run=export_command)


def export_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dicomnode.config import load_config
    from dicomnode.datasets.deid import DeidOptions
    from dicomnode.datasets.export import Export, ExportRequest
    from dicomnode.datasets.select import (
        keywords_needed,
        parse_where,
        read_study_list,
        select,
    )

    config = load_config(args.config)
    clauses = parse_where(args.where)
    study_list = read_study_list(args.study_list) if args.study_list is not None else None
    steps, steps_name, steps_base = _steps(args, config)
    if args.mapping is not None and _inside(args.mapping, args.out):
        print(
            f"dicomnode: --mapping {args.mapping}: keep the mapping outside the export folder "
            "(it re-identifies the data)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    request = ExportRequest(
        out=args.out,
        formats=frozenset(f.strip() for f in args.to.split(",") if f.strip()),
        steps=steps,
        steps_name=steps_name,
        steps_base=steps_base,
        deid=DeidOptions(
            retain_longitudinal=args.retain_dates, clean_descriptors=args.clean_descriptors
        ),
        mapping=args.mapping,
        keep_key=args.keep_key,
        limits=config.pipeline_limits,
    )
    keywords = keywords_needed(clauses, study_list)
    console = Console(stderr=True)
    chosen = _choose(args, config, keywords, clauses, study_list, select)
    if not chosen:
        console.print("no series matched")
        return EXIT_FAILED
    export = Export(request)
    export.open()
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        task = progress.add_task("export", total=len(chosen))
        outcome = export.run(chosen, lambda: progress.advance(task))
    for label, reason in outcome.failed:
        console.print(f"[red]failed[/] {label}: {reason}")
    print(
        f"{args.out}: {outcome.exported} exported, {outcome.skipped} already there, "
        f"{len(outcome.failed)} failed (manifest: {args.out / 'manifest.csv'})"
    )
    return EXIT_OK if not outcome.failed else EXIT_FAILED


def _choose(
    args: argparse.Namespace,
    config: Any,
    keywords: list[str],
    clauses: Any,
    study_list: Any,
    select: Any,
) -> list[Any]:
    from dicomnode.datasets.select import folder_candidates, index_candidates

    if args.folders:
        missing = [str(p) for p in args.folders if not p.exists()]
        if missing:
            from dicomnode.errors import ConfigError

            raise ConfigError(f"--from {', '.join(missing)}: no such file or folder")
        return list(
            select(folder_candidates(args.folders, keywords), clauses, study_list, args.series)
        )
    from dicomnode.store.index import Index
    from dicomnode.store.spool import Spool

    index = Index(existing_index(config))
    try:
        index.open()
        spool = Spool(config.spool_path, config.spool_prefix)
        return list(
            select(index_candidates(index, spool, keywords), clauses, study_list, args.series)
        )
    finally:
        index.close()


def _steps(args: argparse.Namespace, config: Any) -> tuple[tuple[Any, ...], str, Path | None]:
    """The steps ``--steps`` names: a pipeline's (``pipeline:NAME``) or a YAML file's, and
    the folder their relative paths (a ``register`` template) start from."""
    from dicomnode.errors import ConfigError

    if args.steps is None:
        return (), "", None
    if args.steps.startswith("pipeline:"):
        from dicomnode.pipeline.definition import all_definitions

        name = args.steps.removeprefix("pipeline:")
        _models, pipelines = all_definitions(config.models, config.pipelines, str(args.config))
        if name not in pipelines:
            known = ", ".join(sorted(pipelines))
            raise ConfigError(f"--steps {args.steps}: no pipeline {name!r} (pipelines: {known})")
        return tuple(pipelines[name].steps), args.steps, config.base_dir
    path = Path(args.steps)
    if not path.is_file():
        raise ConfigError(f"--steps {path}: no such file (or write pipeline:NAME)")
    import yaml
    from pydantic import ValidationError

    from dicomnode.pipeline.steps import parse_steps

    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if isinstance(raw, dict) and "steps" in raw:
        raw = raw["steps"]
    try:
        return tuple(parse_steps(raw)), path.name, path.parent
    except ValidationError as exc:
        problems = [
            f"{path}: steps.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError("\n".join(problems)) from None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
