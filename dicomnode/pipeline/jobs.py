"""The durable pipeline job queue.

A job moves ``pending -> running -> done | failed``. The router creates it in the same
transaction as the routing decision; the results of a job, the sends of those results
and the job's ``done`` are committed together, so a job killed mid-run runs again after
restart and its results are still sent exactly once.

A job whose run failed for a reason a retry can cure (the spool or the index could not
write its results) goes back to ``pending`` with ``next_attempt_at`` set, up to
``JOB_ATTEMPTS`` runs in all; every other failure is final until an operator retries.

A running job is leased to its node (:mod:`dicomnode.store.claims`): in a cluster,
another node runs it again only once that lease expired, and the first node, should it
come back, can no longer commit results for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from dicomnode.logs import get_logger
from dicomnode.results.prior import PriorResult
from dicomnode.store.claims import LOCAL, Lease, LeaseLostError, taken_over
from dicomnode.store.database import Database
from dicomnode.store.notify import JOB, notify
from dicomnode.store.tables import InstanceRow, JobRow, RoutingDecisionRow, SeriesRow

log = get_logger(__name__)

# The timeline key of a failed job's "AI not run" report (dicomnode.results.not_run).
NOT_RUN_REPORT = "not_run_report"

JOB_ATTEMPTS = 3  # runs of a job whose failures are temporary, before it fails for good


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A pipeline job as operators see it."""

    id: int
    series_id: int
    series_version: int
    rule: str
    pipeline: str
    send_to: tuple[str, ...]
    state: str
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeline: dict[str, Any]
    failures: int = 0
    next_attempt_at: datetime | None = None  # a pending job waits until then (backoff)
    # The rule's on_findings entries as the job was routed (rules.findings.route_as_dict).
    on_findings: tuple[dict[str, Any], ...] = ()
    # Shadow mode (docs/shadow.md): results kept, nothing sent; send_to is where they
    # would have gone.
    shadow: bool = False


class JobQueue:
    """Database operations of pipeline jobs."""

    def __init__(self, database: Database, lease: Lease = LOCAL) -> None:
        self._db = database
        self.lease = lease

    def resume_interrupted(self) -> int:
        """Jobs this node's previous run left running go back to pending (on SQLite, where
        it is the only node, any); a dead node's are taken over as their leases expire."""
        with self._db.writing() as session:
            mine = JobRow.state == "running"
            if session.get_bind().dialect.name != "sqlite":
                mine = and_(mine, or_(JobRow.owner == self.lease.owner, JobRow.owner.is_(None)))
            result = session.execute(
                update(JobRow).where(mine).values(state="pending", owner=None, lease_until=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it

    @staticmethod
    def _claimable(now: datetime | None) -> ColumnElement[bool]:
        """Pending and due (a job backing off is not), or running on an expired lease."""
        pending = JobRow.state == "pending"
        if now is None:
            return pending
        due = and_(pending, or_(JobRow.next_attempt_at.is_(None), JobRow.next_attempt_at <= now))
        return or_(due, taken_over(JobRow.state, "running", JobRow.owner, JobRow.lease_until, now))

    def next_pending(
        self, pipelines: Sequence[str] | None = None, now: datetime | None = None
    ) -> int | None:
        """The oldest job due at ``now`` (a job backing off is not due yet)."""
        with self._db.reading() as session:
            query = select(JobRow.id).where(self._claimable(now))
            if pipelines is not None:
                query = query.where(JobRow.pipeline.in_(pipelines))
            return session.scalar(query.order_by(JobRow.id).limit(1))

    def claim_next(
        self, now: datetime, pipelines: Sequence[str] | None = None
    ) -> JobSummary | None:
        """Claim the oldest due job (``FOR UPDATE SKIP LOCKED``: one node each)."""
        with self._db.writing() as session:
            query = select(JobRow).where(self._claimable(now))
            if pipelines is not None:
                query = query.where(JobRow.pipeline.in_(pipelines))
            row = session.scalars(
                query.order_by(JobRow.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            return None if row is None else self._take(session, row, now)

    def claim(self, job_id: int, now: datetime) -> JobSummary | None:
        """Claim one job by id, if it is pending or its holder's lease expired."""
        with self._db.writing() as session:
            row = session.scalars(
                select(JobRow)
                .where(JobRow.id == job_id, or_(JobRow.state == "pending", self._claimable(now)))
                .with_for_update(skip_locked=True)
            ).first()
            return None if row is None else self._take(session, row, now)

    def _take(self, session: Session, row: JobRow, now: datetime) -> JobSummary:
        if row.state == "running":
            log.warning("job_taken_over", job_id=row.id, previous_owner=row.owner)
        row.state, row.started_at, row.error = "running", now, None
        row.owner, row.lease_until = self.lease.owner, self.lease.until(now)
        row.next_attempt_at = None
        row.attempts += 1
        session.flush()
        return _summary(row)

    def fail(
        self,
        job_id: int,
        now: datetime,
        error: str,
        timeline: dict[str, Any],
        retry_at: datetime | None = None,
    ) -> None:
        """Record a failed run: final, or pending again from ``retry_at`` (backoff)."""
        with self._db.writing() as session:
            row = session.get_one(JobRow, job_id, with_for_update=True)
            if row.state != "running":
                return  # finished meanwhile (done is committed with its results): kept
            if row.owner not in (None, self.lease.owner):
                log.warning("job_lease_lost", job_id=job_id, owner=row.owner)
                return  # another node took it over: its run decides
            row.owner = row.lease_until = None
            row.error, row.timeline = error[:1024], timeline
            row.failures = (row.failures or 0) + 1
            if retry_at is None:
                row.state, row.finished_at, row.next_attempt_at = "failed", now, None
            else:
                row.state, row.finished_at, row.next_attempt_at = "pending", None, retry_at

    def mark_done(
        self, session: Session, job_id: int, now: datetime, timeline: dict[str, Any]
    ) -> None:
        """Inside the transaction that records the job's results and their sends.

        Raises LeaseLostError, rolling that transaction back, when another node took
        the job over meanwhile (its run, not this one, gives the results).
        """
        row = session.get_one(JobRow, job_id, with_for_update=True)
        if row.state != "running" or row.owner not in (None, self.lease.owner):
            raise LeaseLostError(f"job {job_id} is {row.state} on {row.owner or 'no node'}")
        row.state, row.finished_at, row.error = "done", now, None
        row.owner = row.lease_until = None
        row.timeline = timeline

    def rules_version(self, job: JobSummary) -> str | None:
        """The version of the rules that routed the job's series version to it."""
        with self._db.reading() as session:
            return session.scalar(
                select(RoutingDecisionRow.rules_version).where(
                    RoutingDecisionRow.series_id == job.series_id,
                    RoutingDecisionRow.version == job.series_version,
                )
            )

    def prior_results(self, job: JobSummary) -> list[PriorResult]:
        """The results of the same rule's pipeline on earlier versions of the series.

        Those of the latest earlier job that is done (its timeline names its result
        series, as the worker stored them), and the "AI not run" reports of the failed
        jobs since: a result that follows a refusal supersedes the report that said the
        AI did not run as well as the last result. Their instances are read from the
        index, where the results were recorded. Empty for a series' first run.
        """
        with self._db.reading() as session:
            jobs = session.execute(
                select(JobRow.state, JobRow.timeline)
                .where(
                    JobRow.series_id == job.series_id,
                    JobRow.series_version < job.series_version,
                    JobRow.rule == job.rule,
                    JobRow.pipeline == job.pipeline,
                    JobRow.state.in_(("done", "failed")),
                )
                .order_by(JobRow.series_version.desc(), JobRow.id.desc())
            )
            series_uids: list[str] = []
            for state, timeline in jobs:
                timeline = timeline or {}
                if state == "done":  # the latest done job: the chain goes on from its SR
                    series_uids.extend(str(r["series_uid"]) for r in timeline.get("results", []))
                    break
                if NOT_RUN_REPORT in timeline:
                    series_uids.append(str(timeline[NOT_RUN_REPORT]["series_uid"]))
            if not series_uids:
                return []
            rows = session.execute(
                select(SeriesRow.modality, SeriesRow.series_uid, InstanceRow)
                .join(InstanceRow, InstanceRow.series_id == SeriesRow.id)
                .where(SeriesRow.series_uid.in_(series_uids))
                .order_by(InstanceRow.id)
            )
            return [
                PriorResult(
                    modality=modality or "",
                    study_uid=instance.study_uid,
                    series_uid=series_uid,
                    sop_class_uid=instance.sop_class_uid,
                    sop_instance_uid=instance.sop_instance_uid,
                )
                for modality, series_uid, instance in rows
            ]

    @staticmethod
    def note_not_run_report(session: Session, job_id: int, series_uid: str) -> None:
        """Name a failed job's "AI not run" report in its timeline (in the transaction
        that records the report): the job shows it, and a later result replaces it."""
        row = session.get_one(JobRow, job_id)
        row.timeline = {**(row.timeline or {}), NOT_RUN_REPORT: {"series_uid": series_uid}}

    def done_summaries(self, series_id: int) -> dict[str, dict[str, Any]]:
        """Per pipeline, the result summary of its latest done job on the series (what
        ``rules explain`` and dry runs evaluate ``on_findings`` entries on)."""
        with self._db.reading() as session:
            rows = session.execute(
                select(JobRow.pipeline, JobRow.timeline)
                .where(JobRow.series_id == series_id, JobRow.state == "done")
                .order_by(JobRow.series_version, JobRow.id)
            )
            return {pipeline: dict(timeline.get("summary") or {}) for pipeline, timeline in rows}

    def retry(self, job_id: int) -> JobSummary | None:
        """Requeue a failed job; None when it is not failed."""
        with self._db.writing() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.state != "failed":
                return None
            row.state, row.error, row.finished_at = "pending", None, None
            row.next_attempt_at = None
            notify(session, JOB)
            session.flush()
            return _summary(row)

    def get(self, job_id: int) -> JobSummary | None:
        with self._db.reading() as session:
            row = session.get(JobRow, job_id)
            return None if row is None else _summary(row)

    def list_jobs(self, state: str | None = None, limit: int = 200) -> list[JobSummary]:
        with self._db.reading() as session:
            query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
            if state is not None:
                query = query.where(JobRow.state == state)
            return [_summary(row) for row in session.scalars(query)]


def _summary(row: JobRow) -> JobSummary:
    return JobSummary(
        id=row.id,
        series_id=row.series_id,
        series_version=row.series_version,
        rule=row.rule,
        pipeline=row.pipeline,
        send_to=tuple(row.send_to.get("destinations", [])),
        state=row.state,
        attempts=row.attempts,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        timeline=dict(row.timeline),
        failures=row.failures or 0,
        next_attempt_at=row.next_attempt_at,
        on_findings=tuple(row.send_to.get("on_findings", [])),
        shadow=bool(row.shadow),
    )
