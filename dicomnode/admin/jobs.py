"""Pipeline jobs and sends as one list of jobs, told apart by their ids.

The two queues number independently, so an id carries its kind: ``pipeline-12`` is
pipeline job 12 and ``send-7`` is outbox send 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dicomnode.admin import queries
from dicomnode.admin.schemas import JobOut, JobState, PipelineJobOut, SendJobOut
from dicomnode.admin.services import AdminServices
from dicomnode.outbox.queue import SendSummary
from dicomnode.pipeline.jobs import JobSummary

Kind = Literal["pipeline", "send"]
PIPELINE_STATES = frozenset({"pending", "running", "done", "failed"})
SEND_STATES = frozenset({"pending", "sending", "done", "failed"})


@dataclass(frozen=True, slots=True)
class JobId:
    kind: Kind
    number: int

    @classmethod
    def parse(cls, text: str) -> JobId:
        """``pipeline-12`` or ``send-7`` (the path pattern has already checked the form)."""
        kind, _, number = text.partition("-")
        if kind not in ("pipeline", "send") or not number.isdigit():
            raise ValueError(f"{text!r} is not a job id such as pipeline-12 or send-7")
        return cls("pipeline" if kind == "pipeline" else "send", int(number))

    def __str__(self) -> str:
        return f"{self.kind}-{self.number}"


def pipeline_out(job: JobSummary, series_uid: str | None) -> PipelineJobOut:
    return PipelineJobOut(
        id=str(JobId("pipeline", job.id)),
        number=job.id,
        series_id=job.series_id,
        series_uid=series_uid,
        series_version=job.series_version,
        rule=job.rule,
        pipeline=job.pipeline,
        send_to=list(job.send_to),
        state=job.state,
        attempts=job.attempts,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        shadow=job.shadow,
    )


def send_out(send: SendSummary, series_uid: str | None) -> SendJobOut:
    return SendJobOut(
        id=str(JobId("send", send.id)),
        number=send.id,
        series_id=send.series_id,
        series_uid=series_uid,
        series_version=send.series_version,
        destination=send.destination,
        origin=send.origin,
        state=send.state,
        reason=send.reason,
        attempts=send.attempts,
        instance_count=send.instance_count,
        sent_count=send.sent_count,
        commitment=send.commitment,
        created_at=send.created_at,
        next_attempt_at=send.next_attempt_at,
        finished_at=send.finished_at,
    )


def list_jobs(
    services: AdminServices, kind: Kind | None, state: JobState | None, limit: int
) -> list[JobOut]:
    """Newest first; a state only one kind has (``running``, ``sending``) selects that kind."""
    pipeline_jobs: list[JobSummary] = []
    sends: list[SendSummary] = []
    if kind in (None, "pipeline") and (state is None or state in PIPELINE_STATES):
        pipeline_jobs = services.jobs.list_jobs(state, limit)
    if kind in (None, "send") and (state is None or state in SEND_STATES):
        sends = services.sends.list_sends(state, limit)
    return _merged(services, pipeline_jobs, sends)[:limit]


def find_job(services: AdminServices, job_id: JobId) -> JobOut | None:
    if job_id.kind == "pipeline":
        job = services.jobs.get(job_id.number)
        return None if job is None else job_out(services, job)
    send = services.sends.get(job_id.number)
    return None if send is None else job_out(services, send)


def job_out(services: AdminServices, job: JobSummary | SendSummary) -> JobOut:
    uid = queries.series_uids(services.database, [job.series_id]).get(job.series_id)
    return pipeline_out(job, uid) if isinstance(job, JobSummary) else send_out(job, uid)


def jobs_of_series(services: AdminServices, series_id: int) -> list[JobOut]:
    """A series' pipeline jobs, its sends, and the sends of its jobs' results."""
    pipeline_jobs = [
        job
        for job_id in queries.job_ids_of_series(services.database, series_id)
        if (job := services.jobs.get(job_id)) is not None
    ]
    origins = [f"job:{job.id}" for job in pipeline_jobs]
    sends = [
        send
        for send_id in queries.send_ids(services.database, series_id=series_id, origins=origins)
        if (send := services.sends.get(send_id)) is not None
    ]
    return _merged(services, pipeline_jobs, sends)


def _merged(
    services: AdminServices, pipeline_jobs: list[JobSummary], sends: list[SendSummary]
) -> list[JobOut]:
    ids = {job.series_id for job in pipeline_jobs} | {send.series_id for send in sends}
    uids = queries.series_uids(services.database, ids)
    merged: list[JobOut] = [pipeline_out(job, uids.get(job.series_id)) for job in pipeline_jobs]
    merged.extend(send_out(send, uids.get(send.series_id)) for send in sends)
    merged.sort(key=lambda job: (job.created_at, job.kind, job.number), reverse=True)
    return merged
