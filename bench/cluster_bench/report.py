"""The tables: each comparison with its ratio and target, then the costs a sizing model
uses (docs/scaling.md, "Sizing a site").

Repeats are summarised by their median; ratios are taken between medians measured in
the same invocation, side by side, which is what survives this shared machine's noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from rich.table import Table

from cluster_bench.scenario import IngestRun, PipelineRun

TARGET_POSTGRES_TIME_RATIO = 1.5  # issue 14: PostgreSQL within 1.5x of SQLite's ingest time
TARGET_WORKERS_RATE_RATIO = 1.5  # issue 14: --workers 2 at least 1.5x one process's rate
MIB = 2**20


def _median(runs: Sequence[IngestRun], value: Callable[[IngestRun], float]) -> float:
    return statistics.median(value(r) for r in runs)


def _of(runs: Sequence[IngestRun], label: str) -> list[IngestRun]:
    return [r for r in runs if r.label == label]


def _ingest_table(title: str, runs: Sequence[IngestRun], labels: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("", "runs", "wall s (min-max)", "inst/s", "node CPU ms/inst", "PG CPU ms/inst"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_column("stored per writer, each run")
    for label in labels:
        mine = _of(runs, label)
        walls = [r.wall_s for r in mine]
        table.add_row(
            label,
            str(len(mine)),
            f"{statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})",
            f"{_median(mine, lambda r: r.instances_per_s):.0f}",
            f"{_median(mine, lambda r: r.node_cpu_per_instance_s) * 1e3:.2f}",
            f"{_median(mine, lambda r: r.database_cpu_per_instance_s) * 1e3:.2f}",
            "; ".join(_writers(r.by_writer) for r in mine),
        )
    return table


def _writers(by_writer: dict[str, int]) -> str:
    return " ".join(f"{name.rsplit('-', 1)[-1]}:{n}" for name, n in by_writer.items())


def database_table(runs: Sequence[IngestRun]) -> tuple[Table, float]:
    """(a) and the ratio PostgreSQL time / SQLite time."""
    table = _ingest_table(
        "(a) one node: SQLite against PostgreSQL, one sender", runs, ("sqlite", "postgres")
    )
    ratio = _median(_of(runs, "postgres"), lambda r: r.wall_s) / _median(
        _of(runs, "sqlite"), lambda r: r.wall_s
    )
    return table, ratio


def workers_table(runs: Sequence[IngestRun]) -> tuple[Table, float]:
    """(b) and the ratio of rates --workers 2 / --workers 1."""
    table = _ingest_table(
        "(b) serve --workers 1 against --workers 2 (PostgreSQL), two senders at once",
        runs,
        ("workers 1", "workers 2"),
    )
    ratio = _median(_of(runs, "workers 2"), lambda r: r.instances_per_s) / _median(
        _of(runs, "workers 1"), lambda r: r.instances_per_s
    )
    return table, ratio


def nodes_table(ingested: Sequence[IngestRun], worked: Sequence[PipelineRun]) -> Table:
    """(c) ingest (median of the repeats) and pipeline throughput per node count, each
    against one node."""
    table = Table(
        title="(c) node processes on one PostgreSQL and one shared folder",
        title_justify="left",
    )
    for column in (
        "nodes",
        "ingest runs",
        "ingest inst/s (min-max)",
        "x 1 node",
        "node CPU ms/inst",
        "PG CPU ms/inst",
        "jobs",
        "pipeline s",
        "jobs/h",
        "x 1 node",
        "CPU s/job",
        "job s (median)",
        "inference s",
        "peak RSS MiB",
    ):
        table.add_column(column, justify="right")
    counts = sorted({r.processes for r in ingested})
    rate = {n: _median(_by_nodes(ingested, n), lambda r: r.instances_per_s) for n in counts}
    pipelines = {w.nodes: w for w in worked}
    base_jobs = pipelines[counts[0]].jobs_per_hour if counts[0] in pipelines else 0.0
    for n in counts:
        mine = _by_nodes(ingested, n)
        rates = [r.instances_per_s for r in mine]
        row = [
            str(n),
            str(len(mine)),
            f"{rate[n]:.0f} ({min(rates):.0f}-{max(rates):.0f})",
            f"{rate[n] / rate[counts[0]]:.2f}",
            f"{_median(mine, lambda r: r.node_cpu_per_instance_s) * 1e3:.2f}",
            f"{_median(mine, lambda r: r.database_cpu_per_instance_s) * 1e3:.2f}",
        ]
        w = pipelines.get(n)
        if w is None:
            row += ["-"] * 8
        else:
            row += [
                f"{w.done}/{w.jobs}",
                f"{w.wall_s:.1f}",
                f"{w.jobs_per_hour:.0f}",
                f"{w.jobs_per_hour / base_jobs:.2f}" if base_jobs else "-",
                f"{w.node_cpu_per_job_s:.2f}",
                f"{w.median_job_s:.2f}",
                f"{w.median_inference_s:.2f}",
                f"{w.peak_rss_bytes / MIB:.0f}",
            ]
        table.add_row(*row)
    return table


def _by_nodes(runs: Sequence[IngestRun], processes: int) -> list[IngestRun]:
    return [r for r in runs if r.processes == processes]


def targets_table(postgres_ratio: float | None, workers_ratio: float | None, cores: int) -> Table:
    table = Table(title="targets (issue 14)", title_justify="left")
    for column in ("comparison", "target", "measured", "met"):
        table.add_column(column)
    if postgres_ratio is not None:
        table.add_row(
            "PostgreSQL / SQLite ingest time",
            f"<= {TARGET_POSTGRES_TIME_RATIO}",
            f"{postgres_ratio:.2f}",
            _met(postgres_ratio <= TARGET_POSTGRES_TIME_RATIO),
        )
    if workers_ratio is not None:
        table.add_row(
            f"--workers 2 / --workers 1 rate ({cores} cores here)",
            f">= {TARGET_WORKERS_RATE_RATIO}",
            f"{workers_ratio:.2f}",
            _met(workers_ratio >= TARGET_WORKERS_RATE_RATIO),
        )
    return table


def _met(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]no[/red]"


def costs_table(
    database_runs: Sequence[IngestRun],
    nodes_ingest: Sequence[IngestRun],
    nodes_pipeline: Sequence[PipelineRun],
) -> Table:
    """The unit costs for the sizing model, each with where it was measured."""
    table = Table(title="costs for a sizing model", title_justify="left")
    for column in ("cost", "value", "measured in"):
        table.add_column(column)
    for label in ("sqlite", "postgres"):
        mine = _of(database_runs, label)
        if mine:
            table.add_row(
                f"node CPU per instance, {label}",
                f"{_median(mine, lambda r: r.node_cpu_per_instance_s) * 1e3:.2f} ms",
                "(a), one node, one sender (median)",
            )
    single = _by_nodes(nodes_ingest, 1)
    if single:
        table.add_row(
            "node CPU per instance, cluster node",
            f"{_median(single, lambda r: r.node_cpu_per_instance_s) * 1e3:.2f} ms",
            "(c), 1 node, shared folder (median)",
        )
        table.add_row(
            "PostgreSQL CPU per instance",
            f"{_median(single, lambda r: r.database_cpu_per_instance_s) * 1e3:.2f} ms",
            "(c), 1 node (median)",
        )
        first = single[0]
        table.add_row(
            "bytes per instance", f"{first.size_bytes / first.instances / 1e3:.1f} kB", "the data"
        )
        table.add_row("instances per series", f"{first.instances / first.series:.0f}", "the data")
    worked = [w for w in nodes_pipeline if w.nodes == 1]
    if worked:
        w = worked[0]
        table.add_row("node CPU per job", f"{w.node_cpu_per_job_s:.2f} s", "(c), 1 node")
        table.add_row(
            "PostgreSQL CPU per job",
            f"{w.database_cpu_s / max(w.done, 1):.3f} s",
            "(c), 1 node",
        )
        table.add_row(
            "wall per job, one node",
            f"{w.wall_s / max(w.done, 1):.2f} s",
            "(c), 1 node, its 2 pipeline workers",
        )
        table.add_row(
            "job timeline (median), of which inference",
            f"{w.median_job_s:.2f} s, {w.median_inference_s:.2f} s",
            "(c), 1 node",
        )
    return table
