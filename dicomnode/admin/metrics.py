"""Prometheus metrics, computed from the database when scraped.

Why from the database: every event worth counting is already durable there (instances,
associations, completions, sends and their attempts, jobs and their timelines), so no
stage needs instrumenting, the numbers survive restarts and cannot disagree with what
the API shows. What leaves no row (refused instances and callers, duplicates) comes
from ``ReceiveCounters`` when the node wires them. Each node has its own
CollectorRegistry: two nodes in one process (tests) never mix their numbers.

Caveat for retention: counters read from rows stay monotonic only while rows are kept;
whoever deletes index rows must keep these counts (or move them to in-process counters).

Stage and inference latency histograms are built from the timelines of finished jobs.
Each scrape reads only the jobs finished since the previous one (with an overlap for
commits that land late), so a scrape costs the same after a year as after a day.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dicomnode import __version__
from dicomnode.admin import queries
from dicomnode.admin.envelope_metrics import EnvelopeCounts
from dicomnode.admin.services import AdminServices
from dicomnode.errors import StorageError
from dicomnode.logs import get_logger
from dicomnode.store.nodes import cluster
from dicomnode.store.tables import (
    AssociationRow,
    CompletionRow,
    InstanceRow,
    JobRow,
    SendAttemptRow,
    SendRow,
    SeriesRow,
)

log = get_logger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_LATE_COMMIT = timedelta(minutes=5)  # a job's finished_at may be committed this much later


def metrics_registry(services: AdminServices) -> CollectorRegistry:
    """A registry with the node's collector and the process's (CPU, memory, files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(services))
    ProcessCollector(registry=registry)
    return registry


class NodeCollector(Collector):
    def __init__(self, services: AdminServices) -> None:
        self._services = services
        self._latency = _TimelineHistograms()
        self._envelope = EnvelopeCounts()

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read at registration: the database may not exist yet

    def collect(self) -> Iterable[Metric]:
        services = self._services
        up = GaugeMetricFamily(
            "dicomnode_metrics_database_up", "Whether the index answered this scrape (1) or not."
        )
        try:
            with services.database.reading() as session:
                families = [
                    *_from_database(session, services),
                    *self._latency.collect(session),
                    *self._envelope.collect(session),
                ]
        except (SQLAlchemyError, StorageError) as exc:
            log.warning("metrics_database_failed", error=type(exc).__name__)
            families = []
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield up
        yield from families
        yield from _from_counters(services)
        yield from _disk(services)
        yield from _rules(services)
        yield from _cluster(services)


def _cluster(services: AdminServices) -> Iterator[Metric]:
    """This node's identity and the work it holds; the cluster's nodes by state.

    The counters read from the index are the cluster's (every node shares it and shows
    the same numbers); these say which node answered and what it alone holds.
    """
    info = GaugeMetricFamily(
        "dicomnode_node_info",
        "This node: its id, roles and version.",
        labels=["node_id", "roles", "version"],
    )
    info.add_metric([services.node_id, ",".join(services.roles), __version__], 1)
    yield info
    try:
        nodes = cluster(services.database, services.clock(), services.lease_seconds)
    except (SQLAlchemyError, StorageError):
        return
    states = GaugeMetricFamily(
        "dicomnode_cluster_nodes",
        "Node processes on this index, by state (up, lost, stopped).",
        labels=["state"],
    )
    for state in ("up", "lost", "stopped"):
        states.add_metric([state], sum(1 for node in nodes if node.state == state))
    yield states
    held = GaugeMetricFamily(
        "dicomnode_leases_held",
        "Units of work this node holds a lease on, by kind.",
        labels=["kind"],
    )
    for node in nodes:
        if node.id == services.node_id:
            for kind, count in node.leases.items():
                held.add_metric([kind], count)
    yield held


def _from_database(session: Session, services: AdminServices) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "dicomnode_instances_received",
        "Instances received from peers, by calling AE title and outcome "
        "(stored: from the index; duplicate, replaced, rejected: since the process started).",
        labels=["calling_ae", "outcome"],
    )
    received_bytes = CounterMetricFamily(
        "dicomnode_received_bytes",
        "Bytes of the stored instances received from peers, by calling AE title.",
        labels=["calling_ae"],
    )
    rows = session.execute(
        select(InstanceRow.calling_ae, func.count(InstanceRow.id), func.sum(InstanceRow.size))
        .where(InstanceRow.association_id.is_not(None))
        .group_by(InstanceRow.calling_ae)
    )
    for calling_ae, count, size in rows:
        received.add_metric([calling_ae, "stored"], count)
        received_bytes.add_metric([calling_ae], size or 0)
    if services.counters is not None:
        for (calling_ae, outcome), count in sorted(services.counters.outcomes().items()):
            if outcome != "stored":
                received.add_metric([calling_ae, outcome], count)
    yield received
    yield received_bytes

    associations = CounterMetricFamily(
        "dicomnode_associations",
        "Associations by outcome: accepted (every one indexed), released, aborted; "
        "rejected (calling AE title or host not allowed) since the process started.",
        labels=["outcome"],
    )
    by_state = dict(
        session.execute(
            select(AssociationRow.state, func.count(AssociationRow.id)).group_by(
                AssociationRow.state
            )
        ).all()
    )
    associations.add_metric(["accepted"], sum(by_state.values()))
    associations.add_metric(["released"], by_state.get("released", 0))
    associations.add_metric(["aborted"], by_state.get("aborted", 0))
    if services.counters is not None:
        associations.add_metric(["rejected"], sum(services.counters.rejected_callers().values()))
    yield associations
    yield _gauge(
        "dicomnode_associations_open", "Associations open now.", [], [([], by_state.get("open", 0))]
    )

    yield _gauge(
        "dicomnode_series",
        "Series by state (receiving, complete) and origin (received, result).",
        ["state", "origin"],
        _grouped(session, SeriesRow.state, SeriesRow.origin),
    )
    completed = CounterMetricFamily(
        "dicomnode_series_completed",
        "Series versions completed, by the reason they completed (quiet, settle, max_wait).",
        labels=["reason"],
    )
    for (reason,), count in _grouped(session, CompletionRow.reason):
        completed.add_metric([reason], count)
    yield completed
    yield from _failures(session)
    yield _gauge(
        "dicomnode_jobs",
        "Pipeline jobs by pipeline and state (pending, running, done, failed).",
        ["pipeline", "state"],
        _grouped(session, JobRow.pipeline, JobRow.state),
    )
    yield _gauge(
        "dicomnode_sends",
        "Outbox sends by destination and state (pending, sending, done, failed).",
        ["destination", "state"],
        _grouped(session, SendRow.destination, SendRow.state),
    )
    attempts = CounterMetricFamily(
        "dicomnode_send_attempts",
        "Send attempts by destination and outcome (delivered, temporary, permanent).",
        labels=["destination", "outcome"],
    )
    attempt_rows = session.execute(
        select(SendRow.destination, SendAttemptRow.outcome, func.count(SendAttemptRow.id))
        .join(SendRow, SendRow.id == SendAttemptRow.send_id)
        .group_by(SendRow.destination, SendAttemptRow.outcome)
    )
    for destination, outcome, count in attempt_rows:
        attempts.add_metric([destination, outcome], count)
    yield attempts
    yield from _outbox(services)


def _failures(session: Session) -> Iterator[Metric]:
    """Failed routing attempts and pipeline runs (each unit fails alone; see the logs)."""
    routing = CounterMetricFamily(
        "dicomnode_routing_failures",
        "Failed attempts at routing a completed series version (routing_failed events).",
    )
    routing.add_metric([], int(session.scalar(select(func.sum(CompletionRow.failures))) or 0))
    yield routing
    unrouted = dict(
        session.execute(
            select(CompletionRow.failed_at.is_(None), func.count(CompletionRow.id))
            .where(CompletionRow.consumed_at.is_(None), CompletionRow.failures > 0)
            .group_by(CompletionRow.failed_at.is_(None))
        ).all()
    )
    yield _gauge(
        "dicomnode_routing_failing",
        "Series versions not routed because routing failed: retrying (backing off) or "
        "failed (gave up; an operator can retry).",
        ["state"],
        [(["retrying"], unrouted.get(True, 0)), (["failed"], unrouted.get(False, 0))],
    )
    jobs = CounterMetricFamily(
        "dicomnode_job_failures",
        "Failed pipeline runs (job_failed events), by pipeline; a retried job counts each.",
        labels=["pipeline"],
    )
    for pipeline, count in session.execute(
        select(JobRow.pipeline, func.sum(JobRow.failures)).group_by(JobRow.pipeline)
    ):
        jobs.add_metric([pipeline], int(count or 0))
    yield jobs


def _outbox(services: AdminServices) -> Iterator[Metric]:
    states = queries.outbox_by_destination(services.database)
    now = services.clock()
    names = sorted(set(services.destinations) | set(states))
    depth, instances, oldest = [], [], []
    for name in names:
        state = states.get(name, queries.OutboxState())
        depth.append(([name], state.pending))
        instances.append(([name], state.pending_instances))
        since = state.oldest_pending_at
        oldest.append(([name], 0.0 if since is None else max(0.0, (now - since).total_seconds())))
    yield _gauge(
        "dicomnode_outbox_depth",
        "Sends waiting or in progress, by destination.",
        ["destination"],
        depth,
    )
    yield _gauge(
        "dicomnode_outbox_instances",
        "Instances not yet acknowledged by the destination, in sends waiting or in progress.",
        ["destination"],
        instances,
    )
    yield _gauge(
        "dicomnode_outbox_oldest_age_seconds",
        "Age of the oldest send waiting or in progress (0 when none), by destination.",
        ["destination"],
        oldest,
    )


def _from_counters(services: AdminServices) -> Iterator[Metric]:
    if services.counters is None:
        return
    refused = CounterMetricFamily(
        "dicomnode_instances_rejected",
        "Instances refused since the process started, by calling AE title and DIMSE status.",
        labels=["calling_ae", "status"],
    )
    for (calling_ae, status), count in sorted(services.counters.refusals().items()):
        refused.add_metric([calling_ae, status], count)
    yield refused
    by_reason = CounterMetricFamily(
        "dicomnode_refusals",
        "Peers refused since the process started, by reason (docs/conformance.md): "
        "associations rejected or aborted, connections closed, datasets refused.",
        labels=["reason"],
    )
    for reason, count in sorted(services.counters.refusals_by_reason().items()):
        by_reason.add_metric([reason], count)
    yield by_reason


def _disk(services: AdminServices) -> Iterator[Metric]:
    try:
        usage = services.disk.usage()
    except OSError:
        return
    yield _gauge(
        "dicomnode_spool_free_bytes",
        "Free bytes on the spool's file system.",
        [],
        [([], usage.free_bytes)],
    )
    yield _gauge(
        "dicomnode_spool_size_bytes",
        "Size of the spool's file system.",
        [],
        [([], usage.total_bytes)],
    )
    yield _gauge(
        "dicomnode_spool_above_high_water",
        "1 when the spool's file system is above its high-water mark (new instances refused).",
        [],
        [([], int(usage.above_high_water))],
    )


def _rules(services: AdminServices) -> Iterator[Metric]:
    yield _gauge(
        "dicomnode_rules_info",
        "The rules version in force (value 1).",
        ["version"],
        [([services.rules.current.version], 1)],
    )
    yield _gauge(
        "dicomnode_rules_edit_rejected",
        "1 when the latest edit of the rules folder was refused (the previous rules stay).",
        [],
        [([], int(services.rules.last_rejection is not None))],
    )


class _TimelineHistograms:
    """Latency histograms fed by the timelines of jobs as they finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, datetime], datetime] = {}  # (job, finished_at) in overlap
        self._watermark: datetime | None = None
        self._stages: dict[tuple[str, str], _Histogram] = {}
        self._inference: dict[tuple[str], _Histogram] = {}
        self._jobs: dict[tuple[str], _Histogram] = {}

    def collect(self, session: Session) -> list[Metric]:
        with self._lock:
            self._update(session)
            return [
                _histogram(
                    "dicomnode_pipeline_stage_seconds",
                    "Duration of each pipeline stage (load, preprocess, inference, ..., store).",
                    ["pipeline", "stage"],
                    self._stages,
                ),
                _histogram(
                    "dicomnode_model_inference_seconds",
                    "Duration of model inference (the inference stage), by pipeline.",
                    ["pipeline"],
                    self._inference,
                ),
                _histogram(
                    "dicomnode_pipeline_job_seconds",
                    "Duration of a whole pipeline run, load to stored results, by pipeline.",
                    ["pipeline"],
                    self._jobs,
                ),
            ]

    def _update(self, session: Session) -> None:
        query = select(JobRow.id, JobRow.pipeline, JobRow.finished_at, JobRow.timeline).where(
            JobRow.state == "done", JobRow.finished_at.is_not(None)
        )
        if self._watermark is not None:
            query = query.where(JobRow.finished_at >= self._watermark - _LATE_COMMIT)
        for job_id, pipeline, finished_at, timeline in session.execute(query):
            if (job_id, finished_at) in self._seen:
                continue
            self._seen[(job_id, finished_at)] = finished_at
            self._observe(pipeline, timeline)
            if self._watermark is None or finished_at > self._watermark:
                self._watermark = finished_at
        if self._watermark is not None:
            horizon = self._watermark - _LATE_COMMIT
            self._seen = {key: at for key, at in self._seen.items() if at >= horizon}

    def _observe(self, pipeline: str, timeline: dict[str, Any]) -> None:
        for stage in timeline.get("stages", []):
            name, seconds = str(stage.get("stage")), stage.get("seconds")
            if not isinstance(seconds, int | float):
                continue
            self._stages.setdefault((pipeline, name), _Histogram()).observe(float(seconds))
            if name == "inference":
                self._inference.setdefault((pipeline,), _Histogram()).observe(float(seconds))
        total = timeline.get("seconds")
        if isinstance(total, int | float):
            self._jobs.setdefault((pipeline,), _Histogram()).observe(float(total))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, le in enumerate(LATENCY_BUCKETS) if value <= le), -1)
        self.counts[index] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        bounds = [*(repr(le) for le in LATENCY_BUCKETS), "+Inf"]
        running, buckets = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


def _histogram(
    name: str, documentation: str, labels: list[str], data: dict[Any, _Histogram]
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in sorted(data.items()):
        family.add_metric(list(key), histogram.cumulative(), sum_value=histogram.total)
    return family


def _grouped(session: Session, *columns: Any) -> list[tuple[list[str], int]]:
    rows = session.execute(select(*columns, func.count()).group_by(*columns))
    return [([str(value) for value in row[:-1]], int(row[-1])) for row in rows]


def _gauge(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family
