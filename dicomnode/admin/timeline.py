"""A job's timeline: the source series' arrival, completion and routing, the pipeline's
stages with their durations, and every send attempt with its DIMSE status.

For a send of a pipeline's results (origin ``job:N``) the source is the series job N ran
on, and the timeline shows that job's stages before the send.
"""

from __future__ import annotations

from typing import Any

from dicomnode.admin import queries
from dicomnode.admin.jobs import JobId
from dicomnode.admin.schemas import (
    AttemptOut,
    CompletedOut,
    ReceivedOut,
    ResultOut,
    RoutedOut,
    SendTimelineOut,
    StageOut,
    Timeline,
)
from dicomnode.admin.services import AdminServices
from dicomnode.dicom.status import describe
from dicomnode.outbox.queue import SendSummary
from dicomnode.pipeline.jobs import JobSummary


def pipeline_timeline(services: AdminServices, job: JobSummary) -> Timeline:
    sends = [
        send
        for send_id in queries.send_ids(services.database, origins=[f"job:{job.id}"])
        if (send := services.sends.get(send_id)) is not None
    ]
    return _timeline(services, job, job.series_id, job.series_version, sends, job)


def send_timeline(services: AdminServices, send: SendSummary) -> Timeline:
    """Queued, started and finished are the send's; the stages those of its source job."""
    job = _source_job(services, send.origin)
    if job is not None:
        return _timeline(services, job, job.series_id, job.series_version, [send], send)
    return _timeline(services, None, send.series_id, send.series_version, [send], send)


def _source_job(services: AdminServices, origin: str) -> JobSummary | None:
    kind, _, number = origin.partition(":")
    if kind != "job" or not number.isdigit():
        return None
    return services.jobs.get(int(number))


def _timeline(
    services: AdminServices,
    job: JobSummary | None,
    series_id: int,
    version: int,
    sends: list[SendSummary],
    subject: JobSummary | SendSummary,
) -> Timeline:
    series = services.index.series_by_id(series_id)
    arrived = queries.arrivals(services.database, series_id, version)
    completion = next(
        (c for c in reversed(services.index.completions(series_id)) if c.version == version),
        None,
    )
    decision = next((d for d in services.decisions(series_id) if d["version"] == version), None)
    timeline: dict[str, Any] = job.timeline if job is not None else {}
    if isinstance(subject, JobSummary):
        started_at = subject.started_at
    else:
        started_at = min((a.started_at for a in services.sends.attempts(subject.id)), default=None)
    return Timeline(
        series_uid=series.series_uid if series is not None else None,
        received=None
        if arrived is None
        else ReceivedOut(
            first_at=arrived.first_at,
            last_at=arrived.last_at,
            instance_count=arrived.instance_count,
        ),
        completed=None
        if completion is None
        else CompletedOut(at=completion.completed_at, reason=completion.reason),
        routed=None
        if decision is None
        else RoutedOut(
            at=decision["decided_at"],
            rules_version=decision["rules_version"],
            matched_rules=list(decision.get("matched_rules", [])),
        ),
        queued_at=subject.created_at,
        started_at=started_at,
        finished_at=subject.finished_at,
        seconds=timeline.get("seconds"),
        stages=[
            StageOut(
                stage=str(s["stage"]), seconds=float(s["seconds"]), failed=bool(s.get("failed"))
            )
            for s in timeline.get("stages", [])
        ],
        results=[
            ResultOut(modality=str(r["modality"]), series_uid=str(r["series_uid"]))
            for r in timeline.get("results", [])
        ],
        summary=timeline.get("summary"),
        sends=[_send_part(services, send) for send in sends],
        findings_routed=timeline.get("findings_routed"),
        envelope=timeline.get("envelope"),
    )


def _send_part(services: AdminServices, send: SendSummary) -> SendTimelineOut:
    return SendTimelineOut(
        id=str(JobId("send", send.id)),
        destination=send.destination,
        state=send.state,
        attempts=[
            AttemptOut(
                started_at=a.started_at,
                ended_at=a.ended_at,
                outcome=a.outcome,
                status=a.status,
                status_hex=None if a.status is None else f"0x{a.status:04X}",
                status_name=None if a.status is None else describe(a.status),
                detail=a.detail,
                sent=a.sent,
            )
            for a in services.sends.attempts(send.id)
        ],
    )
