"""Read-only queries the API needs beyond what the stages offer (filters, joins, counts).

They read the store's tables and never write them; the stages stay the only writers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from dicomnode.admin.schemas import CompletionOut, SeriesOut
from dicomnode.routing.queue import RoutingQueue, routing_state
from dicomnode.store.database import Database
from dicomnode.store.tables import CompletionRow, InstanceRow, JobRow, SendRow, SeriesRow

WAITING = ("pending", "sending")


@dataclass(frozen=True, slots=True)
class Arrivals:
    first_at: datetime
    last_at: datetime
    instance_count: int


@dataclass(frozen=True, slots=True)
class OutboxState:
    """One destination's queue: sends waiting, failed, and the oldest waiting one."""

    pending: int = 0
    failed: int = 0
    oldest_pending_at: datetime | None = None
    pending_instances: int = 0


def list_series(
    database: Database,
    *,
    state: str | None,
    modality: str | None,
    origin: str | None,
    limit: int,
) -> list[SeriesOut]:
    """Most recently arrived first."""
    query = select(SeriesRow).order_by(SeriesRow.last_arrival_at.desc(), SeriesRow.id.desc())
    if state is not None:
        query = query.where(SeriesRow.state == state)
    if modality is not None:
        query = query.where(SeriesRow.modality == modality)
    if origin is not None:
        query = query.where(SeriesRow.origin == origin)
    with database.reading() as session:
        found = [_series_out(row) for row in session.scalars(query.limit(limit))]
    return _with_routing(database, found)


def find_series(database: Database, series_uid: str) -> SeriesOut | None:
    with database.reading() as session:
        row = session.scalar(select(SeriesRow).where(SeriesRow.series_uid == series_uid))
        found = None if row is None else _series_out(row)
    return None if found is None else _with_routing(database, [found])[0]


def completions(database: Database, series_id: int) -> list[CompletionOut]:
    """Every completed version of a series, oldest first, with how its routing stands."""
    with database.reading() as session:
        rows = session.scalars(
            select(CompletionRow)
            .where(CompletionRow.series_id == series_id)
            .order_by(CompletionRow.id)
        )
        return [
            CompletionOut(
                version=row.version,
                instance_count=row.instance_count,
                reason=row.reason,
                completed_at=row.completed_at,
                consumed_at=row.consumed_at,
                routing_state=routing_state(row) or "waiting",
                routing_failures=row.failures or 0,
                routing_error=row.error,
                next_attempt_at=row.next_attempt_at,
                failed_at=row.failed_at,
            )
            for row in rows
        ]


def series_uids(database: Database, series_ids: Collection[int]) -> dict[int, str]:
    if not series_ids:
        return {}
    with database.reading() as session:
        rows = session.execute(
            select(SeriesRow.id, SeriesRow.series_uid).where(SeriesRow.id.in_(series_ids))
        )
        return {sid: uid for sid, uid in rows}


def arrivals(database: Database, series_id: int, version: int) -> Arrivals | None:
    """When a series version's instances arrived (None when it has none)."""
    with database.reading() as session:
        first, last, count = session.execute(
            select(
                func.min(InstanceRow.received_at),
                func.max(InstanceRow.received_at),
                func.count(InstanceRow.id),
            ).where(InstanceRow.series_id == series_id, InstanceRow.series_version == version)
        ).one()
    if not count:
        return None
    return Arrivals(first, last, int(count))


def job_ids_of_series(database: Database, series_id: int) -> list[int]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(JobRow.id).where(JobRow.series_id == series_id).order_by(JobRow.id)
            )
        )


def send_ids(
    database: Database, *, series_id: int | None = None, origins: Collection[str] = ()
) -> list[int]:
    """Sends of a series and/or with one of ``origins`` (``job:12`` for a job's results)."""
    conditions = []
    if series_id is not None:
        conditions.append(SendRow.series_id == series_id)
    if origins:
        conditions.append(SendRow.origin.in_(origins))
    if not conditions:
        return []
    with database.reading() as session:
        return list(
            session.scalars(select(SendRow.id).where(or_(*conditions)).order_by(SendRow.id))
        )


def outbox_by_destination(database: Database) -> dict[str, OutboxState]:
    """Every destination that has sends, with its queue's state."""
    with database.reading() as session:
        waiting = session.execute(
            select(
                SendRow.destination,
                func.count(SendRow.id),
                func.min(SendRow.created_at),
                func.sum(SendRow.instance_count - SendRow.sent_count),
            )
            .where(SendRow.state.in_(WAITING))
            .group_by(SendRow.destination)
        ).all()
        failed = dict(
            session.execute(
                select(SendRow.destination, func.count(SendRow.id))
                .where(SendRow.state == "failed")
                .group_by(SendRow.destination)
            ).all()
        )
    states: dict[str, OutboxState] = {
        name: OutboxState(failed=int(count)) for name, count in failed.items()
    }
    for name, count, oldest, instances in waiting:
        states[name] = OutboxState(
            pending=int(count),
            failed=states.get(name, OutboxState()).failed,
            oldest_pending_at=oldest,
            pending_instances=int(instances or 0),
        )
    return states


def _series_out(row: SeriesRow) -> SeriesOut:
    return SeriesOut.model_validate(row, from_attributes=True)


def _with_routing(database: Database, series: list[SeriesOut]) -> list[SeriesOut]:
    """The series with how routing stands for each one's latest completed version."""
    statuses = RoutingQueue(database).statuses([s.id for s in series])
    return [
        s.model_copy(update={"routing_state": status.state, "routing_error": status.error})
        if (status := statuses.get(s.id)) is not None
        else s
        for s in series
    ]


def counts_by_state(database: Database) -> dict[str, dict[str, int]]:
    """How many series, pipeline jobs and sends are in each state (for the overview)."""
    counted: dict[str, dict[str, int]] = {}
    with database.reading() as session:
        for name, column in (
            ("series", SeriesRow.state),
            ("pipeline_jobs", JobRow.state),
            ("sends", SendRow.state),
        ):
            rows = session.execute(select(column, func.count()).group_by(column))
            counted[name] = {str(state): int(count) for state, count in rows}
    return counted
