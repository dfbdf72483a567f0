"""``/api/series``: what arrived, its completion, what the rules decided, what ran."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from dicomnode.admin import queries
from dicomnode.admin.context import Context
from dicomnode.admin.jobs import jobs_of_series
from dicomnode.admin.schemas import (
    CompletionOut,
    DecisionOut,
    ErrorOut,
    InstanceOut,
    SeriesDetail,
    SeriesOut,
    SeriesQuery,
)

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
        instances=[
            InstanceOut(
                id=i.id,
                sop_class_uid=i.sop_class_uid,
                sop_instance_uid=i.sop_instance_uid,
                transfer_syntax_uid=i.transfer_syntax_uid,
                size=i.size,
                series_version=i.series_version,
            )
            for i in services.index.instances_of(series.id)
        ],
        completions=[
            CompletionOut(
                version=c.version,
                instance_count=c.instance_count,
                reason=c.reason,
                completed_at=c.completed_at,
                consumed_at=c.consumed_at,
            )
            for c in services.index.completions(series.id)
        ],
        decisions=[decision_out(d) for d in services.decisions(series.id)],
        jobs=jobs_of_series(services, series.id),
    )


def decision_out(decision: dict[str, Any]) -> DecisionOut:
    """A stored routing decision; keys the API does not know yet are left out."""
    return DecisionOut.model_validate({key: decision.get(key) for key in DecisionOut.model_fields})
