"""CT series through ``ct-tissue-reference``, from the last image in to the SEG and SR
acknowledged by the receiver.

One run starts a fresh storescp (the PACS) and a fresh node, then sends the series one
after another, each once the previous one's results have arrived: the first job meets a
node that has only loaded its model, the later ones a warm node. For each series:

- the stages (load, preprocess, inference, restore, seg, sr, store) and the job's total
  are the job's own timeline in the node's database (``jobs.timeline``), read after the
  run through ``JobQueue.list_jobs``; "between stages" is the job's total less the
  stages (work the engine does not time, such as the region statistics);
- the sends of the results are the node's ``send_delivered`` events (``seconds``: claim
  to last acknowledgement recorded) of the sends whose origin is the job;
- the end-to-end latency runs from storescu's exit (the last image acknowledged and the
  association released) to the modification time of the later of the SEG and SR files
  at storescp, which writes each file before it answers; it is split at the node's log
  events (series_completed, series_routed, job_started, job_done, send_delivered);
- peak RSS is the node's ``VmHWM`` (its children included) after the series' results
  arrived: the peak since the node started (TensorFlow, the model, every ingest and job).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchkit import arrivals, nodelog
from benchkit.procstats import cpu_s, peak_rss, rss
from dicomnode.outbox.queue import OutboxQueue
from dicomnode.pipeline.jobs import JobQueue, JobSummary
from dicomnode.store.database import Database
from dicomnode.store.index import Index
from dicomnode.testing.node import NODE_AE, NodeProcess
from ingest_bench.hotspots import Attacher
from ingest_bench.measure import DataSet
from ingest_bench.receivers import StorescpReceiver
from ingest_bench.sender import send

PIPELINE = "ct-tissue-reference"
PIPELINE_RULE = [
    {"name": "ct", "match": {"Modality": "CT"}, "pipeline": PIPELINE, "send_to": ["pacs"]}
]
RESULTS = 2  # one SEG, one SR
_NODE_START_TIMEOUT_S = 180.0  # TensorFlow's import and the model load come first


@dataclass(frozen=True, slots=True)
class ResultSend:
    modality: str
    instances: int
    seconds: float  # the node's send_delivered "seconds"


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One series through the pipeline; seconds unless named otherwise."""

    position: int  # 1: the node's first series since start (cold), then warm
    node_start_s: float  # exec to listening, the model loaded
    idle_rss_bytes: int  # the node's RSS once listening
    ingest_wall_s: float  # storescu into the node, exec to exit
    stages: tuple[tuple[str, float], ...]  # the job's timeline
    job_s: float  # the job's timeline total (run and store)
    sends: tuple[ResultSend, ...]
    settle_s: float  # storescu exit -> series_completed
    route_s: float  # series_completed -> series_routed
    pickup_s: float  # series_routed -> job_started
    job_wall_s: float  # job_started -> job_done (log)
    send_wait_s: float  # job_done -> the first result send started
    sends_wall_s: float  # first result send started -> last send_delivered
    end_to_end_s: float  # storescu exit -> the later of SEG and SR at storescp
    seg_at_s: float  # storescu exit -> SEG at storescp
    sr_at_s: float  # storescu exit -> SR at storescp
    node_cpu_s: float  # the node's CPU, storescu exit -> last send_delivered
    node_peak_rss_bytes: int  # VmHWM since the node started, read after this series
    received: tuple[str, ...]  # what storescp holds: "SEG", "SR" (see arrivals.kind_of)
    job_state: str
    job_error: str
    summary: dict[str, Any]
    sender_rc: int

    @property
    def ok(self) -> bool:
        return self.sender_rc == 0 and self.job_state == "done" and self.received == ("SEG", "SR")

    def stage(self, name: str) -> float:
        return sum(seconds for stage, seconds in self.stages if stage == name)

    @property
    def between_stages_s(self) -> float:
        return self.job_s - sum(seconds for _, seconds in self.stages)

    @property
    def send_s(self) -> float:
        return sum(s.seconds for s in self.sends)


def pipeline_run(
    series: Sequence[DataSet],
    run_dir: Path,
    *,
    settle_s: float,
    timeout_s: float,
    profiler: Attacher | None = None,
) -> list[PipelineRun]:
    """Send each series, one after another, into one fresh node; time each one's job.

    The first series meets a node that has only loaded its model (the first job also pays
    for first-use work: TensorFlow's tracing, highdicom's tables); later ones meet a warm
    node. Each series is sent only once the previous one's results have arrived.
    ``profiler`` attaches once the first series is in (inside the settle wait) and
    detaches before the node stops.
    """
    run_dir.mkdir(parents=True)
    try:
        with StorescpReceiver(run_dir / "pacs") as pacs:
            node = _pipeline_node(run_dir / "node", pacs, settle_s)
            try:
                started = time.perf_counter()
                node.start(timeout=_NODE_START_TIMEOUT_S)
                start_s = time.perf_counter() - started
                process = psutil.Process(node.process.pid)
                idle = rss(process)
                runs = []
                for position, data in enumerate(series, start=1):
                    runs.append(
                        _measure(
                            _Run(node, process, pacs, position, start_s, idle),
                            data,
                            timeout_s,
                            profiler if position == 1 else None,
                        )
                    )
                return runs
            finally:
                try:
                    if profiler is not None:
                        profiler.detach()  # before the node stops: see Attacher
                finally:
                    node.stop(timeout=60.0)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()


def _pipeline_node(workdir: Path, pacs: StorescpReceiver, settle_s: float) -> NodeProcess:
    rules = workdir / "rules"
    rules.mkdir(parents=True)
    (rules / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE_RULE), encoding="utf-8")
    destination = {"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}
    return NodeProcess(
        workdir,
        {"destinations": {"pacs": destination}, "completion": {"settle_seconds": settle_s}},
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """The node of one benchmark run, and what is known of it before a series is sent."""

    node: NodeProcess
    process: psutil.Process
    pacs: StorescpReceiver
    position: int
    start_s: float
    idle_rss_bytes: int


def _measure(run: _Run, data: DataSet, timeout_s: float, profiler: Attacher | None) -> PipelineRun:
    earlier_events = len(nodelog.read_events(run.node.log_path))
    earlier_files = {p.name for p in run.pacs.output_dir.iterdir()}
    sent = send(data.folder, NODE_AE, run.node.port, tcp_nodelay=True, timeout_s=timeout_s)
    acked_at = time.time()
    cpu_before = cpu_s(run.process)
    if profiler is not None:
        profiler.attach(run.process.pid)
    if sent.returncode != 0:
        raise RuntimeError(f"storescu into the node failed: {sent.log_tail[-500:]}")

    def ours(events: list[nodelog.Event]) -> list[nodelog.Event]:
        return events[earlier_events:]

    events = ours(
        nodelog.wait_for_events(
            run.node.log_path,
            lambda evs: len(nodelog.named(ours(evs), "send_delivered")) >= RESULTS,
            failed=lambda evs: _failed(ours(evs)),
            timeout_s=timeout_s,
            what=f"{RESULTS} send_delivered events in the node's log",
        )
    )
    cpu_after = cpu_s(run.process)
    arrivals.wait_for_files(
        run.pacs.output_dir,
        RESULTS,
        timeout_s=10.0,
        accept=lambda name: name not in earlier_files,
    )
    peak = peak_rss(run.process)
    files = {
        arrivals.kind_of(p.name): p.stat().st_mtime
        for p in run.pacs.output_dir.iterdir()
        if p.name not in earlier_files
    }
    completed = nodelog.named(events, "series_completed")[0]
    job, sends = _job_and_sends(run.node, events, int(completed["series_id"]))
    routed = nodelog.named(events, "series_routed")[0]
    job_started = nodelog.named(events, "job_started")[0]
    job_done = nodelog.named(events, "job_done")[0]
    delivered = nodelog.named(events, "send_delivered")
    first_send = min(e.at - float(e["seconds"]) for e in delivered)
    last_file = max(files.values(), default=acked_at)
    seg_at, sr_at = files.get("SEG", acked_at), files.get("SR", acked_at)  # 0 s: missing
    return PipelineRun(
        position=run.position,
        node_start_s=run.start_s,
        idle_rss_bytes=run.idle_rss_bytes,
        ingest_wall_s=sent.wall_s,
        stages=tuple((s["stage"], float(s["seconds"])) for s in job.timeline.get("stages", [])),
        job_s=float(job.timeline.get("seconds", 0.0)),
        sends=sends,
        settle_s=completed.at - acked_at,
        route_s=routed.at - completed.at,
        pickup_s=job_started.at - routed.at,
        job_wall_s=job_done.at - job_started.at,
        send_wait_s=first_send - job_done.at,
        sends_wall_s=max(e.at for e in delivered) - first_send,
        end_to_end_s=last_file - acked_at,
        seg_at_s=seg_at - acked_at,
        sr_at_s=sr_at - acked_at,
        node_cpu_s=cpu_after - cpu_before,
        node_peak_rss_bytes=peak,
        received=tuple(sorted(files)),
        job_state=job.state,
        job_error=job.error or "",
        summary=dict(job.timeline.get("summary", {})),
        sender_rc=sent.returncode,
    )


def _job_and_sends(
    node: NodeProcess, events: list[nodelog.Event], series_id: int
) -> tuple[JobSummary, tuple[ResultSend, ...]]:
    """The series' job (its timeline) and the job's result sends, from the node's database."""
    database = Database(node.config.database_url)
    try:
        jobs = [j for j in JobQueue(database).list_jobs() if j.series_id == series_id]
        if len(jobs) != 1:
            raise RuntimeError(f"expected one job for series {series_id}, found {len(jobs)}")
        job = jobs[0]
        modality = {s.id: s.modality or "?" for s in Index(database).list_series()}
        ours = {s.id: s for s in OutboxQueue(database).list_sends() if s.origin == f"job:{job.id}"}
    finally:
        database.close()
    sends = tuple(
        ResultSend(modality[ours[e["send_id"]].series_id], int(e["sent"]), float(e["seconds"]))
        for e in nodelog.named(events, "send_delivered")
        if e["send_id"] in ours
    )
    return job, sends


def _failed(events: list[nodelog.Event]) -> str | None:
    for name in (
        "job_failed",
        "job_crashed",
        "send_failed",
        "send_retry_scheduled",
        "series_unrouted",
    ):
        found = nodelog.named(events, name)
        if found:
            fields = found[-1].fields
            return f"{name}: {fields.get('error') or fields.get('reason') or dict(fields)}"
    return None
