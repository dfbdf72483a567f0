"""Retention: delete a series' spooled files once it is old and fully handled.

A complete series (received, or a result the node wrote) is purged ``retention`` after it
completed, and only when nothing may still need its files: it has been routed, every send
of it is done (a failed send can be retried, so it keeps the files) and every job on it
is done. The series and instance rows stay, marked purged, as history. The rows are
marked first and the files deleted after: a crash in between leaves files the index no
longer claims, which start-up removes like any unacknowledged file.

The rows themselves go ``index_retention`` after the files (``storage.index_retention_days``):
a purged series' instances, completions, routing decisions, jobs and sends, in batches, so
that the index does not grow with every series ever received. The audit log stays: it
names jobs and sends by id, and says who did what even after the rows are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Delete,
    Exists,
    and_,
    delete,
    exists,
    not_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from dicomnode.logs import get_logger
from dicomnode.store.database import Database
from dicomnode.store.spool import Spool
from dicomnode.store.tables import (
    AssociationRow,
    CompletionRow,
    InstanceRow,
    JobRow,
    RejectionRow,
    RoutingDecisionRow,
    SendAttemptRow,
    SendItemRow,
    SendRow,
    SeriesRow,
)

log = get_logger(__name__)

Clock = Callable[[], datetime]


PRUNE_BATCH = 200  # series per transaction: a short write lock, however much is due


@dataclass(frozen=True, slots=True)
class Purge:
    series: int
    files: int


@dataclass(frozen=True, slots=True)
class Pruned:
    series: int
    instances: int
    associations: int


class Retention:
    """Purges old, fully handled series; run periodically by the node's scheduler."""

    def __init__(
        self,
        database: Database,
        spool: Spool,
        retention: timedelta,
        clock: Clock,
        index_retention: timedelta | None = None,
    ) -> None:
        self._db = database
        self._spool = spool
        self._retention = retention
        self._clock = clock
        self._index_retention = index_retention  # None: rows are kept for ever

    def housekeeping(self) -> None:
        """The scheduled run: files first, then the rows of series purged long ago."""
        self.run_once()
        self.prune_index()

    def run_once(self) -> Purge:
        cutoff = self._clock() - self._retention
        with self._db.writing() as session:
            due = list(
                session.scalars(
                    select(SeriesRow.id).where(
                        SeriesRow.state == "complete",
                        SeriesRow.purged_at.is_(None),
                        SeriesRow.completed_at < cutoff,
                        not_(_unfinished(SendRow.series_id, SendRow.state != "done")),
                        not_(_unfinished(JobRow.series_id, JobRow.state != "done")),
                        not_(
                            _unfinished(
                                CompletionRow.series_id, CompletionRow.consumed_at.is_(None)
                            )
                        ),
                    )
                )
            )
            if not due:
                return Purge(0, 0)
            names = list(
                session.scalars(
                    select(InstanceRow.spool_name).where(InstanceRow.series_id.in_(due))
                )
            )
            session.execute(
                update(SeriesRow).where(SeriesRow.id.in_(due)).values(purged_at=self._clock())
            )
        for name in names:
            self._spool.remove(name)
        log.info("series_purged", series=len(due), files=len(names), series_ids=due[:50])
        return Purge(len(due), len(names))

    def prune_index(self) -> Pruned:
        """Delete the rows of series whose files were purged ``index_retention`` ago."""
        if self._index_retention is None:
            return Pruned(0, 0, 0)
        cutoff = self._clock() - self._index_retention
        series = instances = 0
        while True:
            with self._db.writing() as session:
                due = list(
                    session.scalars(
                        select(SeriesRow.id)
                        .where(SeriesRow.purged_at < cutoff, SeriesRow.state == "complete")
                        .order_by(SeriesRow.id)
                        .limit(PRUNE_BATCH)
                    )
                )
                if not due:
                    break
                sends = select(SendRow.id).where(SendRow.series_id.in_(due))
                for statement in (
                    delete(SendItemRow).where(SendItemRow.send_id.in_(sends)),
                    delete(SendAttemptRow).where(SendAttemptRow.send_id.in_(sends)),
                    delete(SendRow).where(SendRow.series_id.in_(due)),
                    delete(JobRow).where(JobRow.series_id.in_(due)),
                    delete(RoutingDecisionRow).where(RoutingDecisionRow.series_id.in_(due)),
                    delete(CompletionRow).where(CompletionRow.series_id.in_(due)),
                    delete(RejectionRow).where(RejectionRow.note_series_id.in_(due)),
                ):
                    session.execute(statement)
                instances += _deleted(
                    session, delete(InstanceRow).where(InstanceRow.series_id.in_(due))
                )
                session.execute(delete(SeriesRow).where(SeriesRow.id.in_(due)))
                series += len(due)
        with self._db.writing() as session:
            # Associations that ended before the cutoff and name no instance left.
            associations = _deleted(
                session,
                delete(AssociationRow).where(
                    AssociationRow.ended_at < cutoff,
                    not_(exists().where(InstanceRow.association_id == AssociationRow.id)),
                ),
            )
        if series or associations:
            log.info("index_pruned", series=series, instances=instances, associations=associations)
        return Pruned(series, instances, associations)


def _deleted(session: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed (a DELETE's result is a CursorResult)."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount)


def _unfinished(
    series_column: InstrumentedAttribute[int], condition: ColumnElement[bool]
) -> Exists:
    """EXISTS a row of that table for the series in that condition."""
    return exists().where(and_(series_column == SeriesRow.id, condition))
