"""Retention: delete a series' spooled files once it is old and fully handled.

A complete series (received, or a result the node wrote) is purged ``retention`` after it
completed, and only when nothing may still need its files: it has been routed, every send
of it is done (a failed send can be retried, so it keeps the files) and every job on it
is done. The series and instance rows stay, marked purged, as history. The rows are
marked first and the files deleted after: a crash in between leaves files the index no
longer claims, which start-up removes like any unacknowledged file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Exists, and_, exists, not_, select, update
from sqlalchemy.orm import InstrumentedAttribute

from dicomnode.logs import get_logger
from dicomnode.store.database import Database
from dicomnode.store.spool import Spool
from dicomnode.store.tables import CompletionRow, InstanceRow, JobRow, SendRow, SeriesRow

log = get_logger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Purge:
    series: int
    files: int


class Retention:
    """Purges old, fully handled series; run periodically by the node's scheduler."""

    def __init__(
        self, database: Database, spool: Spool, retention: timedelta, clock: Clock
    ) -> None:
        self._db = database
        self._spool = spool
        self._retention = retention
        self._clock = clock

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


def _unfinished(
    series_column: InstrumentedAttribute[int], condition: ColumnElement[bool]
) -> Exists:
    """EXISTS a row of that table for the series in that condition."""
    return exists().where(and_(series_column == SeriesRow.id, condition))
