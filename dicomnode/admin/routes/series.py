"""``/api/series``: what arrived, its completion, what the rules decided, what ran."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from dicomnode.admin import queries
from dicomnode.admin.auth import actor_of, audit_detail
from dicomnode.admin.context import Context
from dicomnode.admin.jobs import jobs_of_series
from dicomnode.admin.schemas import (
    CHANGE_REFUSALS,
    DecisionOut,
    ErrorOut,
    InstanceOut,
    RerouteOut,
    RoutingRetryOut,
    SeriesDetail,
    SeriesOut,
    SeriesQuery,
)
from dicomnode.logs import get_logger
from dicomnode.routing.queue import RoutingQueue

log = get_logger(__name__)
router = APIRouter(prefix="/api/series", tags=["series"])


@router.get("", summary="Series, most recently arrived first")
def list_series(context: Context, query: Annotated[SeriesQuery, Query()]) -> list[SeriesOut]:
    return queries.list_series(
        context.services.database,
        state=query.state,
        modality=query.modality,
        origin=query.origin,
        limit=query.limit,
    )


@router.get(
    "/{series_uid}",
    summary="One series: instances, completions, routing decisions, jobs and sends",
    responses={404: {"model": ErrorOut, "description": "No series with this UID"}},
)
def get_series(context: Context, series_uid: str) -> SeriesDetail:
    services = context.services
    series = queries.find_series(services.database, series_uid)
    if series is None:
        raise HTTPException(404, f"no series with UID {series_uid}")
    return SeriesDetail(
        series=series,
        # The index's summaries carry every field the API shows (and some it keeps back,
        # such as spool file names): pydantic reads the declared ones by attribute.
        instances=[
            InstanceOut.model_validate(i, from_attributes=True)
            for i in services.index.instances_of(series.id)
        ],
        completions=queries.completions(services.database, series.id),
        decisions=[decision_out(d) for d in services.decisions(series.id)],
        jobs=jobs_of_series(services, series.id),
    )


@router.post(
    "/{series_uid}/retry-routing",
    summary="Route a series' failed versions again now (audited)",
    responses={
        **CHANGE_REFUSALS,
        404: {"model": ErrorOut, "description": "No series with this UID"},
        409: {"model": ErrorOut, "description": "No version of it failed routing"},
    },
)
def retry_routing(context: Context, request: Request, series_uid: str) -> RoutingRetryOut:
    services = context.services
    series = queries.find_series(services.database, series_uid)
    if series is None:
        raise HTTPException(404, f"no series with UID {series_uid}")
    requeued = RoutingQueue(services.database).retry(series.id)
    if not requeued:
        raise HTTPException(409, f"series {series_uid} has no failed routing: nothing to retry")
    actor = actor_of(request)
    context.audit.record(
        services.clock(),
        actor,
        "series.retry_routing",
        series_uid,
        {
            "previous_state": series.routing_state,
            "previous_reason": series.routing_error,
            **audit_detail(request),
        },
    )
    # The router polls its queue every few seconds: the retry needs no wake-up.
    log.info("routing_retried", series_uid=series_uid, actor=actor, count=requeued)
    return RoutingRetryOut(series_uid=series_uid, requeued=requeued)


@router.post(
    "/{series_uid}/reroute",
    summary="Route a stored series again by the rules in force now (audited)",
    responses={
        **CHANGE_REFUSALS,
        404: {"model": ErrorOut, "description": "No series with this UID"},
        409: {
            "model": ErrorOut,
            "description": "Still receiving, or its latest version is not routed yet",
        },
    },
)
def reroute(context: Context, request: Request, series_uid: str) -> RerouteOut:
    services = context.services
    series = queries.find_series(services.database, series_uid)
    if series is None:
        raise HTTPException(404, f"no series with UID {series_uid}")
    actor = actor_of(request)
    rules_version = services.rules.current.version
    queued = RoutingQueue(services.database).reroute(series.id, actor, services.clock())
    if queued.refused is not None or queued.version is None:
        raise HTTPException(409, f"series {series_uid} cannot be routed again: {queued.refused}")
    context.audit.record(
        services.clock(),
        actor,
        "series.reroute",
        series_uid,
        {
            "version": queued.version,
            "rules_version": rules_version,
            "previous_state": series.routing_state,
            **audit_detail(request),
        },
    )
    log.info("series_reroute_queued", series_uid=series_uid, actor=actor, version=queued.version)
    services.wake_routing()
    return RerouteOut(series_uid=series_uid, version=queued.version, rules_version=rules_version)


def decision_out(decision: dict[str, Any]) -> DecisionOut:
    """A stored routing decision; keys the API does not know yet are left out."""
    return DecisionOut.model_validate({key: decision.get(key) for key in DecisionOut.model_fields})
