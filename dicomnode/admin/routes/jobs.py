"""``/api/jobs``: pipeline jobs and sends, their timelines, and retrying failed ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from dicomnode.admin.auth import actor_of, audit_detail
from dicomnode.admin.context import Context
from dicomnode.admin.jobs import JobId, find_job, job_out, list_jobs
from dicomnode.admin.schemas import (
    CHANGE_REFUSALS,
    JOB_ID_PATTERN,
    ErrorOut,
    JobDetail,
    JobOut,
    JobsQuery,
)
from dicomnode.admin.timeline import pipeline_timeline, send_timeline
from dicomnode.logs import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobIdPath = Annotated[
    str, Path(pattern=JOB_ID_PATTERN, description="pipeline-<n> or send-<n>", examples=["send-7"])
]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job"}
}


@router.get("", summary="Pipeline jobs and sends, newest first")
def get_jobs(context: Context, query: Annotated[JobsQuery, Query()]) -> list[JobOut]:
    return list_jobs(context.services, query.kind, query.state, query.limit)


@router.get("/{job_id}", summary="One job with its timeline", responses=_NOT_FOUND)
def get_job(context: Context, job_id: JobIdPath) -> JobDetail:
    services = context.services
    parsed = JobId.parse(job_id)
    if parsed.kind == "pipeline":
        job = services.jobs.get(parsed.number)
        if job is not None:
            return JobDetail(job=job_out(services, job), timeline=pipeline_timeline(services, job))
    else:
        send = services.sends.get(parsed.number)
        if send is not None:
            return JobDetail(job=job_out(services, send), timeline=send_timeline(services, send))
    raise HTTPException(404, f"no job {job_id}")


@router.post(
    "/{job_id}/retry",
    summary="Requeue a failed job now (audited)",
    responses={
        **CHANGE_REFUSALS,
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job has not failed: nothing to retry"},
    },
)
def retry_job(context: Context, request: Request, job_id: JobIdPath) -> JobOut:
    services = context.services
    parsed = JobId.parse(job_id)
    before = find_job(services, parsed)
    if before is None:
        raise HTTPException(404, f"no job {job_id}")
    if parsed.kind == "pipeline":
        retried = services.jobs.retry(parsed.number) is not None
    else:
        retried = services.sends.retry(parsed.number, services.clock()) is not None
    if not retried:
        current = find_job(services, parsed)
        state = current.state if current is not None else before.state
        raise HTTPException(409, f"job {job_id} is {state}, not failed: nothing to retry")
    actor = actor_of(request)
    reason = before.error if before.kind == "pipeline" else before.reason
    context.audit.record(
        services.clock(),
        actor,
        "job.retry",
        job_id,
        {"previous_state": before.state, "previous_reason": reason, **audit_detail(request)},
    )
    log.info("job_retried", job_id=job_id, actor=actor)
    if before.kind == "send":
        services.wake_sends(before.destination)
    else:
        services.wake_jobs()
    return find_job(services, parsed) or before
