"""One measured round: senders in parallel into a group of nodes, or a queue of pipeline
jobs worked off by a group of nodes.

Ingest: every series is one association (one storescu run, as a modality sends a
series); series ``j`` goes to member ``j % members`` and is sent by sender
``j % senders``, each sender sending its series one after another, all senders at once.
The wall time runs from the first sender's start to the last one's exit; CPU is the
nodes' (and PostgreSQL's) user + system time over that span.

Pipeline: the jobs are already queued in the database (routed by receive-only nodes);
the clock starts once every pipeline node is up (TensorFlow imported, the model
loaded) and stops when every job is done or failed and every result send is finished,
as read from the database every 0.2 s.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import create_engine, select

from cluster_bench.nodes import Group
from dicomnode.store.tables import JobRow, SendRow
from dicomnode.testing.node import NODE_AE
from ingest_bench.measure import DataSet
from ingest_bench.sender import Sent, send

_POLL_S = 0.2
_FINISHED = ("done", "failed")


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One ingest round; seconds unless named otherwise."""

    scenario: str  # "sqlite-vs-postgres", "workers", "nodes"
    label: str  # "sqlite", "postgres", "workers 2", "3 nodes", ...
    repeat: int
    processes: int  # node processes (workers included)
    senders: int
    series: int
    instances: int
    size_bytes: int
    wall_s: float
    node_cpu_s: float
    database_cpu_s: float  # PostgreSQL's postmaster and backends; 0 on SQLite
    stored: int
    by_writer: dict[str, int]  # instances stored per writing node id (see Group.stored)
    failed_sends: tuple[str, ...]  # storescu log tails of the runs that exited non-zero

    @property
    def ok(self) -> bool:
        return not self.failed_sends and self.stored == self.instances

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.wall_s

    @property
    def node_cpu_per_instance_s(self) -> float:
        return self.node_cpu_s / self.instances

    @property
    def database_cpu_per_instance_s(self) -> float:
        return self.database_cpu_s / self.instances


def ingest(
    group: Group,
    series: Sequence[DataSet],
    *,
    scenario: str,
    label: str,
    repeat: int,
    senders: int,
    timeout_s: float,
) -> IngestRun:
    """Send every series once, ``senders`` storescu at a time, and time it."""
    ports = [member.port for member in group.members]
    work: list[list[tuple[DataSet, int]]] = [[] for _ in range(senders)]
    for j, data in enumerate(series):
        work[j % senders].append((data, ports[j % len(ports)]))
    failures: list[str] = []
    lock = threading.Lock()

    def run_sender(assigned: list[tuple[DataSet, int]]) -> None:
        for data, port in assigned:
            sent: Sent = send(data.folder, NODE_AE, port, tcp_nodelay=True, timeout_s=timeout_s)
            if sent.returncode != 0:
                with lock:
                    failures.append(f"{data.label} -> port {port}: {sent.log_tail[-300:]}")

    node_before, database_before = group.node_cpu_s(), group.database_cpu_s()
    start = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(run_sender, work))
    wall = time.perf_counter() - start
    node_after, database_after = group.node_cpu_s(), group.database_cpu_s()
    by_writer = group.stored()
    return IngestRun(
        scenario=scenario,
        label=label,
        repeat=repeat,
        processes=sum(m.spec.workers for m in group.members),
        senders=senders,
        series=len(series),
        instances=sum(d.count for d in series),
        size_bytes=sum(d.size_bytes for d in series),
        wall_s=wall,
        node_cpu_s=node_after - node_before,
        database_cpu_s=database_after - database_before,
        stored=sum(by_writer.values()),
        by_writer=by_writer,
        failed_sends=tuple(failures),
    )


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """Queued jobs worked off by a group of nodes; seconds unless named otherwise."""

    label: str  # "1 nodes", ...
    nodes: int
    jobs: int
    done: int
    failed: tuple[str, ...]  # the failed jobs' and sends' errors
    wall_s: float  # every node up -> every job finished and its results sent
    node_cpu_s: float
    database_cpu_s: float
    job_s: tuple[float, ...]  # each done job's own timeline total
    inference_s: tuple[float, ...]  # each done job's inference stage
    result_sends: int
    peak_rss_bytes: int  # VmHWM summed over the nodes (and children)

    @property
    def ok(self) -> bool:
        return not self.failed and self.done == self.jobs

    @property
    def jobs_per_hour(self) -> float:
        return self.done * 3600.0 / self.wall_s

    @property
    def node_cpu_per_job_s(self) -> float:
        return self.node_cpu_s / max(self.done, 1)

    @property
    def median_job_s(self) -> float:
        return statistics.median(self.job_s) if self.job_s else 0.0

    @property
    def median_inference_s(self) -> float:
        return statistics.median(self.inference_s) if self.inference_s else 0.0


def queued_jobs(database_url: str) -> int:
    """How many jobs routing has made so far (any state)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return len(connection.execute(select(JobRow.id)).all())
    finally:
        engine.dispose()


def wait_for_jobs(database_url: str, count: int, timeout_s: float) -> None:
    """Until routing has made ``count`` jobs (every series completed and routed)."""
    deadline = time.monotonic() + timeout_s
    while (made := queued_jobs(database_url)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{made} of {count} jobs routed after {timeout_s:.0f} s")
        time.sleep(_POLL_S)


def work_off(group: Group, label: str, jobs: int, timeout_s: float) -> PipelineRun:
    """Time the group from now until every queued job and its result sends finished."""
    engine = create_engine(group.members[0].database_url)
    node_before, database_before = group.node_cpu_s(), group.database_cpu_s()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(select(JobRow.state, JobRow.error)).all()
                sends = connection.execute(
                    select(SendRow.state, SendRow.reason).where(SendRow.origin.like("job:%"))
                ).all()
            finished = [r for r in rows if r.state in _FINISHED]
            done = sum(1 for r in rows if r.state == "done")
            if (
                len(finished) == jobs
                and len(sends) >= done
                and all(s.state in _FINISHED for s in sends)
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(finished)} of {jobs} jobs finished, "
                    f"{sum(1 for s in sends if s.state in _FINISHED)} of {len(sends)} result "
                    f"sends, after {timeout_s:.0f} s"
                )
            time.sleep(_POLL_S)
        wall = time.perf_counter() - start
        node_after, database_after = group.node_cpu_s(), group.database_cpu_s()
        with engine.connect() as connection:
            timelines = connection.execute(
                select(JobRow.timeline).where(JobRow.state == "done")
            ).all()
    finally:
        engine.dispose()
    failed = [f"job: {r.error}" for r in rows if r.state == "failed"]
    failed += [f"send: {s.reason}" for s in sends if s.state == "failed"]
    return PipelineRun(
        label=label,
        nodes=len(group.members),
        jobs=jobs,
        done=done,
        failed=tuple(failed),
        wall_s=wall,
        node_cpu_s=node_after - node_before,
        database_cpu_s=database_after - database_before,
        job_s=tuple(float(t.timeline.get("seconds", 0.0)) for t in timelines),
        inference_s=tuple(_stage(t.timeline, "inference") for t in timelines),
        result_sends=len(sends),
        peak_rss_bytes=group.peak_rss(),
    )


def _stage(timeline: dict[str, object], name: str) -> float:
    stages = timeline.get("stages", [])
    if not isinstance(stages, list):
        return 0.0
    return sum(float(s["seconds"]) for s in stages if isinstance(s, dict) and s["stage"] == name)
