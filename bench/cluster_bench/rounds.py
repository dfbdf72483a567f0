"""The three comparisons, each a series of fresh groups on fresh databases.

(a) one SQLite node against one PostgreSQL node, one sender; (b) ``serve --workers 1``
against ``--workers 2`` on PostgreSQL, two senders; (c) 1, 2 and 3 node processes on
one PostgreSQL and one shared folder: ingest with the pipeline rule in place (receive
and route only, so the jobs queue up), then the same node ids restarted with every role
to work the queued jobs off (the first repeat only: TensorFlow's start is dear). Repeats
rotate the order, so no side always runs first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster_bench.nodes import Group, MemberSpec
from cluster_bench.scenario import IngestRun, PipelineRun, ingest, wait_for_jobs, work_off
from dicomnode.testing.cluster import node_settings
from dicomnode.testing.postgres import PostgresCluster
from ingest_bench.measure import DataSet
from ingest_bench.receivers import StorescpReceiver

PIPELINE = "ct-tissue-reference"
PIPELINE_RULE = [
    {"name": "ct", "match": {"Modality": "CT"}, "pipeline": PIPELINE, "send_to": ["pacs"]}
]
LEASE_SECONDS = 30.0  # the product's default
# Ingest nodes of (c) route but run no pipeline, so the jobs queue up for the second phase.
RECEIVERS = ["receive", "route"]
_START_TIMEOUT_S = 60.0
_PIPELINE_START_TIMEOUT_S = 300.0  # TensorFlow's import and the model load, per node


@dataclass(frozen=True, slots=True)
class Context:
    """What every round shares."""

    postgres: PostgresCluster
    series: Sequence[DataSet]
    workdir: Path
    timeout_s: float
    say: Callable[[str], None]


def database_pair(ctx: Context, repeats: int) -> list[IngestRun]:
    """(a) The same series, one sender, into one SQLite node and one PostgreSQL node."""
    runs = []
    for rep in range(1, repeats + 1):
        order = ("sqlite", "postgres") if rep % 2 else ("postgres", "sqlite")
        for engine in order:
            folder = ctx.workdir / "a" / f"{rep:02d}-{engine}"
            settings: dict[str, Any] = {}
            if engine == "postgres":
                settings["database"] = {"url": ctx.postgres.url(ctx.postgres.create_database())}
            run = _ingest_round(
                ctx, [MemberSpec(engine, folder, settings)], "sqlite-vs-postgres", engine, rep, 1
            )
            runs.append(run)
    return runs


def workers_pair(ctx: Context, repeats: int, senders: int = 2) -> list[IngestRun]:
    """(b) ``serve --workers 1`` against ``--workers 2`` on PostgreSQL, senders at once."""
    runs = []
    for rep in range(1, repeats + 1):
        order = (1, 2) if rep % 2 else (2, 1)
        for workers in order:
            folder = ctx.workdir / "b" / f"{rep:02d}-workers-{workers}"
            url = ctx.postgres.url(ctx.postgres.create_database())
            settings = {"database": {"url": url}, "node": {"id": "bench-host"}}
            spec = MemberSpec(f"workers-{workers}", folder, settings, workers, True)
            runs.append(_ingest_round(ctx, [spec], "workers", f"workers {workers}", rep, senders))
    return runs


def node_counts(
    ctx: Context, counts: Sequence[int], senders: int, repeats: int
) -> tuple[list[IngestRun], list[PipelineRun]]:
    """(c) K nodes on one PostgreSQL and one shared folder: ingest ``repeats`` times (the
    order of K rotating), and the first repeat's queued jobs worked off by K nodes."""
    ingested, worked = [], []
    for rep in range(1, repeats + 1):
        shift = (rep - 1) % len(counts)
        for count in [*counts[shift:], *counts[:shift]]:
            run, pipeline = _node_count_round(ctx, count, senders, rep, pipeline=rep == 1)
            ingested.append(run)
            if pipeline is not None:
                worked.append(pipeline)
    return ingested, sorted(worked, key=lambda w: w.nodes)


def _node_count_round(
    ctx: Context, count: int, senders: int, rep: int, *, pipeline: bool
) -> tuple[IngestRun, PipelineRun | None]:
    folder = ctx.workdir / "c" / f"{rep:02d}-nodes-{count}"
    url = ctx.postgres.url(ctx.postgres.create_database())
    rules = folder / "rules"
    rules.mkdir(parents=True)
    (rules / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE_RULE), encoding="utf-8")
    label = f"{count} node" + ("s" if count > 1 else "")
    with StorescpReceiver(folder / "pacs") as pacs:
        common: dict[str, Any] = {
            "rules_dir": str(rules),
            "destinations": {
                "pacs": {"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}
            },
        }
        ingested = _ingest_round(
            ctx,
            _cluster_specs(url, folder, "ingest", count, {**common, "node": {"roles": RECEIVERS}}),
            "nodes",
            label,
            rep,
            senders,
            then=lambda: wait_for_jobs(url, len(ctx.series), ctx.timeout_s),
        )
        if not pipeline:
            return ingested, None
        ctx.say(f"(c) {label}: {len(ctx.series)} jobs queued; starting the nodes with every role")
        with Group(_cluster_specs(url, folder, "pipeline", count, common), ctx.postgres) as group:
            group.start(_PIPELINE_START_TIMEOUT_S)
            worked = work_off(group, label, len(ctx.series), ctx.timeout_s)
    ctx.say(
        f"(c) {label}: {worked.done}/{worked.jobs} jobs in {worked.wall_s:.1f} s, "
        f"{worked.jobs_per_hour:.0f} jobs/h, {worked.result_sends} result sends"
    )
    _settle_disk()
    return ingested, worked


def _cluster_specs(
    url: str, folder: Path, phase: str, count: int, extra: dict[str, Any]
) -> list[MemberSpec]:
    """``count`` nodes ``node-1``... on one database and ``folder/shared``."""
    specs = []
    for n in range(1, count + 1):
        settings = node_settings(
            url, folder / "shared", f"node-{n}", lease_seconds=LEASE_SECONDS, **extra
        )
        specs.append(MemberSpec(f"node-{n}", folder / phase / f"node-{n}", settings))
    return specs


def _ingest_round(
    ctx: Context,
    specs: Sequence[MemberSpec],
    scenario: str,
    label: str,
    rep: int,
    senders: int,
    then: Callable[[], None] | None = None,
) -> IngestRun:
    with Group(specs, ctx.postgres) as group:
        group.start(_START_TIMEOUT_S)
        run = ingest(
            group,
            ctx.series,
            scenario=scenario,
            label=label,
            repeat=rep,
            senders=senders,
            timeout_s=ctx.timeout_s,
        )
        if then is not None:
            then()
    status = "" if run.ok else f" [red]FAILED: stored {run.stored}, {run.failed_sends}[/red]"
    ctx.say(
        f"({scenario}) {label}, run {rep}: {run.instances} instances in {run.wall_s:.2f} s, "
        f"{run.instances_per_s:.0f}/s, node CPU {run.node_cpu_per_instance_s * 1e3:.2f} ms, "
        f"PostgreSQL CPU {run.database_cpu_per_instance_s * 1e3:.2f} ms per instance; "
        f"stored per writer {run.by_writer}{status}"
    )
    _settle_disk()
    return run


def _settle_disk() -> None:
    """Write back what this round left dirty, so the next round does not pay for it.

    Folders are kept until the end (see bench/README.md, ``bench/ingest``: deleting
    thousands of files makes the next creations dearer on this ext4).
    """
    os.sync()
