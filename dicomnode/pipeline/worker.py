"""Pipeline workers: threads that take pending jobs, run them and store the results.

A job's results (the SEG and SR files), their sends to the rule's ``send_to`` and the
job's ``done`` are committed in one transaction. A crash before it leaves the job
``running``, which start-up turns back to ``pending``: it runs again and its results are
still sent once. Result files written before such a crash are unknown to the index and
removed at start-up like any unacknowledged file.

Each job is one unit: whatever it raises (a model's exception or timeout, an unreadable
file, a volume over the limits, a failed write) fails that job with its reason and the
worker takes the next. A failure a retry may cure (the spool or the index could not
write) puts the job back with a delay, up to ``JOB_ATTEMPTS`` runs.

A job that fails for good (a refusal, or its last attempt) of a pipeline with
``report_not_run`` gets an "AI not run" SR (:mod:`dicomnode.results.not_run`) in the
source's study, sent to the job's destinations like results. It is written after the
failure is committed and in its own transaction: the job stays failed with its reason,
and a report that cannot be made or queued is only logged. A temporary failure that
will be retried sends nothing, so a job that succeeds at a later attempt leaves no
"not run" report behind.

A shadow job (docs/shadow.md: its rule or its pipeline says ``shadow: true``) runs and
keeps its results like any other, and queues no send at all: not to ``send_to``, not by
``on_findings``, no "AI not run" report. Its timeline says where they would have gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from io import BytesIO
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from dicomnode.errors import PipelineError, StorageError
from dicomnode.logs import get_logger
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.pipeline.findings import Routed, evaluate_job, queue_routes
from dicomnode.pipeline.jobs import JOB_ATTEMPTS, JobQueue, JobSummary
from dicomnode.results.not_run import write_not_run_sr
from dicomnode.rules.findings import RouteVerdict
from dicomnode.store.claims import LOCAL, Lease, LeaseLostError
from dicomnode.store.database import Database
from dicomnode.store.handoff import queue_send
from dicomnode.store.header import header_of
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool

log = get_logger(__name__)

Clock = Callable[[], datetime]
_IDLE_POLL_SECONDS = 5.0
_FIRST_RETRY = timedelta(seconds=30)  # doubled at each further temporary failure


class PipelineWorkers:
    """``count`` threads sharing the job queue."""

    def __init__(
        self,
        database: Database,
        index: Index,
        spool: Spool,
        engine: PipelineEngine,
        our_ae: str,
        sends_queued: Callable[[Iterable[str]], None],
        clock: Clock,
        count: int = 2,
        lease: Lease = LOCAL,
    ) -> None:
        self.queue = JobQueue(database, lease)
        self._db = database
        self._index = index
        self._spool = spool
        self._engine = engine
        self._our_ae = our_ae
        self._sends_queued = sends_queued
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"pipeline-{n}", daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        resumed = self.queue.resume_interrupted()
        if resumed:
            log.info("jobs_resumed", count=resumed)
        for thread in self._threads:
            thread.start()
        # Off the start path: reading highdicom's tables must not delay the listener.
        threading.Thread(target=self._warm_up, name="pipeline-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            self._engine.warm_up()
        except Exception:
            # The root of this thread: a failed warm-up only leaves it to the first job.
            log.exception("pipeline_warm_up_failed")

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self._step()
            except Exception:
                # The root of this thread: log, pause, carry on.
                log.exception("pipeline_worker_failed")
                busy = False
                self._stopping.wait(5.0)
            if not busy:
                self._wake.wait(_IDLE_POLL_SECONDS)
                self._wake.clear()

    def _step(self) -> bool:
        job = self.queue.claim_next(self._clock())
        if job is None:
            return False
        self.run_job(job)
        return True

    def run_job(self, job: JobSummary) -> None:
        """Run one claimed job to done or failed."""
        definition = self._engine.pipelines.get(job.pipeline)
        if definition is not None and definition.shadow and not job.shadow:
            job = replace(job, shadow=True)  # the pipeline went shadow after routing
        log.info("job_started", job_id=job.id, pipeline=job.pipeline, series_id=job.series_id)
        started = time.perf_counter()
        result = RunResult()  # filled as stages end: a failure keeps what ran and where
        try:
            paths = [
                self._spool.path(row.spool_name)
                for row in self._index.instances_of(job.series_id)
                if row.series_version <= job.series_version
            ]
            replaces = self.queue.prior_results(job)
            rules_version = self.queue.rules_version(job)
            self._engine.run(job.pipeline, paths, result, replaces, rules_version)
            self._store(job, result, started)
        except PipelineError as exc:
            self._fail(job, str(exc), started, result)
        except (StorageError, OSError) as exc:
            # The spool or the index could not read or write: a later run may succeed.
            self._fail(job, f"{type(exc).__name__}: {exc}", started, result, temporary=True)
        except Exception as exc:
            log.exception("job_crashed", job_id=job.id, pipeline=job.pipeline)
            self._fail(job, f"{type(exc).__name__}: {exc}", started, result)

    def _store(self, job: JobSummary, result: RunResult, started: float) -> None:
        store_started = time.perf_counter()
        files = [(ds, self._spool.write(b"", _encode(ds))) for ds in result.datasets]
        now = self._clock()
        verdicts = self._findings_verdicts(job, result)
        try:
            routed = self._commit(job, result, files, verdicts, now, started, store_started)
        except LeaseLostError as exc:
            # Another node took the job over after our lease ran out: its run's results
            # are the ones sent; ours are dropped, files included.
            for _ds, spooled in files:
                self._spool.remove(spooled.name)
            log.warning("job_lease_lost", job_id=job.id, pipeline=job.pipeline, reason=str(exc))
            return
        self._announce_done(job, files, started)
        self._announce_routed(job, routed)

    def _commit(
        self,
        job: JobSummary,
        result: RunResult,
        files: list[tuple[pydicom.Dataset, Any]],
        verdicts: tuple[RouteVerdict, ...],
        now: datetime,
        started: float,
        store_started: float,
    ) -> list[Routed]:
        """Record the results, queue their sends and routes, mark the job done: one
        transaction. Raises LeaseLostError (nothing written) if the job is not ours."""
        with self._db.writing() as session:
            result_series = self._record_and_queue(session, job, files, now)
            routed: list[Routed] = []
            if not job.shadow:
                routed = queue_routes(
                    session,
                    verdicts,
                    job_id=job.id,
                    series_id=job.series_id,
                    series_version=job.series_version,
                    send_to=job.send_to,
                    result_series=result_series,
                    now=now,
                )
            stages = [*_stages(result), {"stage": "store", "seconds": _since(store_started)}]
            timeline = {
                "stages": stages,
                "seconds": _since(started),
                "summary": result.summary,
                "results": [
                    {"modality": str(ds.Modality), "series_uid": str(ds.SeriesInstanceUID)}
                    for ds, _ in files
                ],
            }
            if job.shadow:
                timeline.update(_shadow_timeline(job, verdicts))
            elif verdicts:
                timeline["findings_routed"] = [r.as_dict() for r in routed]
            if result.envelope is not None:  # run, flagged: outside the model's envelope
                timeline["envelope"] = result.envelope
            self.queue.mark_done(session, job.id, now, timeline)
        return routed

    def _findings_verdicts(self, job: JobSummary, result: RunResult) -> tuple[RouteVerdict, ...]:
        """The job's on_findings entries on its results; none when they cannot be read
        back (logged: the results still go to ``send_to``)."""
        if not job.on_findings:
            return ()
        definition = self._engine.pipelines.get(job.pipeline)
        try:
            return evaluate_job(job.on_findings, result.summary, definition)
        except ValueError as exc:
            log.error("findings_routing_unreadable", job_id=job.id, rule=job.rule, error=str(exc))
            return ()

    def _announce_routed(self, job: JobSummary, routed: list[Routed]) -> None:
        """Log each entry that fired (rule, entry, destinations: no patient data)."""
        destinations: dict[str, None] = {}
        for item in routed:
            log.info(
                "findings_routed",
                job_id=job.id,
                rule=job.rule,
                entry=item.entry,
                results_to=list(item.results_to),
                forwarded_to=list(item.forwarded_to),
            )
            destinations.update(dict.fromkeys((*item.results_to, *item.forwarded_to)))
        if destinations:
            try:
                self._sends_queued(list(destinations))
            except Exception:
                # The sends are committed; the outbox finds them at its next poll.
                log.exception("job_sends_wake_failed", job_id=job.id)

    def _record_and_queue(
        self,
        session: Session,
        job: JobSummary,
        files: list[tuple[pydicom.Dataset, Any]],
        now: datetime,
    ) -> list[int]:
        """Index spooled result files as our own instances; queue their series for the
        job's destinations (in the caller's transaction). Returns the series' ids."""
        series_ids: list[int] = []
        for dataset, spooled in files:
            series_id = Index.record_result(
                session,
                header_of(dataset),
                spooled,
                str(dataset.file_meta.TransferSyntaxUID),
                self._our_ae,
                now,
            )
            if series_id not in series_ids:
                series_ids.append(series_id)
        for destination in () if job.shadow else job.send_to:
            for series_id in series_ids:
                queue_send(session, destination, series_id, 1, f"job:{job.id}", now)
        return series_ids

    def _announce_done(
        self, job: JobSummary, files: list[tuple[pydicom.Dataset, Any]], started: float
    ) -> None:
        """After the commit: a failure here must not turn a done job into a failed one."""
        log.info(
            "job_done",
            job_id=job.id,
            pipeline=job.pipeline,
            series_id=job.series_id,
            results=[str(ds.Modality) for ds, _ in files],
            send_to=list(job.send_to),
            shadow=job.shadow,
            seconds=_since(started),
        )
        if job.send_to and files and not job.shadow:
            try:
                self._sends_queued(job.send_to)
            except Exception:
                # The sends are committed; the outbox finds them at its next poll.
                log.exception("job_sends_wake_failed", job_id=job.id)

    def _fail(
        self,
        job: JobSummary,
        error: str,
        started: float,
        result: RunResult,
        temporary: bool = False,
    ) -> None:
        stages = _stages(result)
        timeline: dict[str, Any] = {"stages": stages, "seconds": _since(started)}
        if result.envelope is not None:  # not run: outside the model's input envelope
            timeline["envelope"] = result.envelope
        now = self._clock()
        retry_at = None
        if temporary and job.attempts < JOB_ATTEMPTS:
            retry_at = now + _FIRST_RETRY * 2 ** (job.attempts - 1)
        self.queue.fail(job.id, now, error, timeline, retry_at=retry_at)
        failed_in = next((s["stage"] for s in stages if s.get("failed")), None)
        log.warning(
            "job_failed",
            job_id=job.id,
            pipeline=job.pipeline,
            series_id=job.series_id,
            stage=failed_in,
            error=error,
            reason=error,
            attempts=job.attempts,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
        if retry_at is None:
            self._report_not_run(job, error)

    def _headers(self, job: JobSummary) -> list[pydicom.Dataset]:
        """The job's source headers; an unreadable file is left out (the others name it)."""
        headers: list[pydicom.Dataset] = []
        for row in self._index.instances_of(job.series_id):
            if row.series_version > job.series_version:
                continue
            try:
                path = self._spool.path(row.spool_name)
                headers.append(pydicom.dcmread(path, stop_before_pixels=True))
            except (OSError, ValueError, AttributeError, InvalidDicomError) as exc:
                log.info("not_run_source_unreadable", job_id=job.id, error=type(exc).__name__)
        return headers

    def _report_not_run(self, job: JobSummary, error: str) -> None:
        """The "AI not run" SR for a job failed for good, if its pipeline asks for one."""
        definition = self._engine.pipelines.get(job.pipeline)
        if definition is None or not definition.report_not_run or job.shadow:
            return  # a shadow job's failure is only recorded: nothing may reach the PACS
        try:
            headers = self._headers(job)
            provenance = self._engine.provenance(job.pipeline, self.queue.rules_version(job))
            report = write_not_run_sr(
                headers,
                definition.algorithm.info(),
                error,
                series_number=definition.series_number + 1,
                provenance=provenance,
            )
            spooled = self._spool.write(b"", _encode(report))
            now = self._clock()
            with self._db.writing() as session:
                self._record_and_queue(session, job, [(report, spooled)], now)
                JobQueue.note_not_run_report(session, job.id, str(report.SeriesInstanceUID))
        except Exception as exc:  # noqa: BLE001 - a courtesy report: logged, never raised
            # The job has failed and says why; its report must not take the worker down.
            # Only the exception's type: a writer's message may quote a patient's data.
            log.warning(
                "not_run_report_failed",
                job_id=job.id,
                pipeline=job.pipeline,
                error=type(exc).__name__,
            )
            return
        log.info(
            "not_run_reported", job_id=job.id, pipeline=job.pipeline, send_to=list(job.send_to)
        )
        if job.send_to:
            try:
                self._sends_queued(job.send_to)
            except Exception:
                log.exception("job_sends_wake_failed", job_id=job.id)


def _shadow_timeline(job: JobSummary, verdicts: tuple[RouteVerdict, ...]) -> dict[str, Any]:
    """Where a shadow job's results would have gone, had it not been in shadow."""
    would_route = [
        {
            "entry": v.route.name,
            "results_to": list(v.route.send_results_to),
            "forwarded_to": list(v.route.forward_to),
        }
        for v in verdicts
        if v.fired
    ]
    return {"shadow": True, "would_send_to": list(job.send_to), "would_route": would_route}


def _encode(dataset: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _stages(result: RunResult) -> list[dict[str, Any]]:
    return [
        {"stage": s.name, "seconds": s.seconds, **({"failed": True} if s.failed else {})}
        for s in result.stages
    ]


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)
