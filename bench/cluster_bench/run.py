"""Command-line options and the order of ``bench/cluster``: data once, then (a), (b), (c).

The default run takes a few minutes (small phantoms, few series); ``--full`` sends
bigger ones. Every process it starts (nodes, storescu, storescp, PostgreSQL) is ended
by its PID; the work folder is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from cluster_bench import report
from cluster_bench.data import Shape, generate
from cluster_bench.rounds import Context, database_pair, node_counts, workers_pair
from cluster_bench.scenario import IngestRun, PipelineRun
from dicomnode.testing.postgres import PostgresCluster
from ingest_bench.machine import describe, git_revision, machine_table

PARTS = ("a", "b", "c")
# (series, slices, size) of the default run and of --full
_DEFAULT = (16, 40, 256)
_FULL = (24, 100, 512)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/cluster",
        description="A dicomnode cluster side by side: SQLite against PostgreSQL, "
        "serve --workers 1 against 2, and 1-3 node processes on one PostgreSQL and one "
        "shared folder (ingest and ct-tissue-reference jobs); unit costs for sizing.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"bigger data: {_FULL[0]} series of {_FULL[1]} x {_FULL[2]}x{_FULL[2]} "
        f"(default {_DEFAULT[0]} of {_DEFAULT[1]} x {_DEFAULT[2]}x{_DEFAULT[2]})",
    )
    parser.add_argument("--series", type=_positive, help="series sent in every round")
    parser.add_argument("--slices", type=_positive, help="slices per phantom series")
    parser.add_argument("--size", type=_positive, help="rows and columns of a phantom slice")
    parser.add_argument(
        "--real-ct",
        action="store_true",
        help="copies of the real CT at DICOMNODE_TEST_DATA (new UIDs) instead of phantoms",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        help="runs of each ingest comparison (median); (c)'s pipelines run once",
    )
    parser.add_argument(
        "--nodes", type=_positive, default=3, help="(c) runs with 1 up to this many nodes"
    )
    parser.add_argument(
        "--senders", type=_positive, default=3, help="(c) storescu at once (default 3)"
    )
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only this part (repeatable)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every sample here")
    parser.add_argument("--note", default="", help="a line to print and keep with the figures")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--workdir-parent", type=Path, default=None)
    parser.add_argument("--timeout", type=_positive, default=900, help="seconds per step")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _shape(options: argparse.Namespace) -> Shape:
    series, slices, size = _FULL if options.full else _DEFAULT
    return Shape(
        series=options.series or series,
        slices=options.slices or slices,
        size=options.size or size,
        real_ct=options.real_ct,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    parts = set(options.only or PARTS)
    console = Console(width=None if sys.stdout.isatty() else 150)
    parent = options.workdir_parent or Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="dicomnode-bench-cluster-", dir=parent))
    started = datetime.now(UTC)
    database_runs: list[IngestRun] = []
    workers_runs: list[IngestRun] = []
    nodes_ingest: list[IngestRun] = []
    nodes_pipeline: list[PipelineRun] = []
    postgres = PostgresCluster()
    try:
        machine = describe(workdir)
        console.print(machine_table(machine, started, options.note))
        console.print(f"load average before: {_load()}")
        shape = _shape(options)
        generated = time.perf_counter()
        series = generate(workdir / "data", shape)
        console.print(
            f"generated {shape.label}: {sum(d.count for d in series)} files, "
            f"{sum(d.size_bytes for d in series) / 1e6:.1f} MB, in "
            f"{time.perf_counter() - generated:.1f} s (not part of any timing)"
        )
        os.sync()
        postgres.start()
        ctx = Context(postgres, series, workdir / "runs", options.timeout, console.print)
        if "a" in parts:
            database_runs = database_pair(ctx, options.repeat)
        if "b" in parts:
            workers_runs = workers_pair(ctx, options.repeat)
        if "c" in parts:
            counts = list(range(1, options.nodes + 1))
            nodes_ingest, nodes_pipeline = node_counts(ctx, counts, options.senders, options.repeat)
        console.print(f"load average after: {_load()}")
        console.print()
        postgres_ratio = workers_ratio = None
        if database_runs:
            table, postgres_ratio = report.database_table(database_runs)
            console.print(table)
        if workers_runs:
            table, workers_ratio = report.workers_table(workers_runs)
            console.print(table)
        if nodes_ingest:
            console.print(report.nodes_table(nodes_ingest, nodes_pipeline))
        if postgres_ratio is not None or workers_ratio is not None:
            console.print(report.targets_table(postgres_ratio, workers_ratio, machine.cores))
        console.print(report.costs_table(database_runs, nodes_ingest, nodes_pipeline))
        if options.json is not None:
            document: dict[str, Any] = {
                "date": started.isoformat(timespec="seconds"),
                "note": options.note,
                "argv": sys.argv[1:],
                "machine": asdict(machine),
                "data": asdict(shape),
                "postgresql": str(postgres.bindir),
                "ingest": [
                    {**asdict(r), "instances_per_s": r.instances_per_s}
                    for r in [*database_runs, *workers_runs, *nodes_ingest]
                ],
                "pipeline": [
                    {**asdict(w), "jobs_per_hour": w.jobs_per_hour} for w in nodes_pipeline
                ],
                "ratios": {
                    "postgres_over_sqlite_time": postgres_ratio,
                    "workers2_over_workers1_rate": workers_ratio,
                },
            }
            options.json.write_text(json.dumps(document, indent=2) + "\n")
            console.print(f"samples written to {options.json}")
        revision_after = git_revision()
        if revision_after not in machine.dicomnode:
            console.print(
                f"[red]WARNING[/red] dicomnode changed during the run: {machine.dicomnode} "
                f"-> {revision_after}"
            )
    finally:
        postgres.stop()
        if options.keep:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            subprocess.run(["sync"], check=False)
    failed = [r for r in [*database_runs, *workers_runs, *nodes_ingest] if not r.ok]
    failed_jobs = [w for w in nodes_pipeline if not w.ok]
    for run in failed:
        console.print(
            f"[red]FAILED[/red] {run.label} run {run.repeat}: stored {run.stored} of "
            f"{run.instances}; {'; '.join(run.failed_sends)[:500]}"
        )
    for worked in failed_jobs:
        console.print(f"[red]FAILED[/red] pipeline, {worked.label}: {worked.failed[:3]}")
    return 1 if failed or failed_jobs else 0


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"
