"""The index's read queries: what operators, the API and the stages ask of it.

``Index`` inherits these; they open a read session each and return plain frozen values,
never rows, so nothing read here can be changed by mistake or outlive its session.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.store.header import JSONValue
from dicomnode.store.tables import AssociationRow, CompletionRow, InstanceRow, SeriesRow


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """A series as operators see it in ``dicomnode series``."""

    id: int
    study_uid: str
    series_uid: str
    modality: str | None
    description: str | None
    body_part: str | None
    instance_count: int
    version: int
    state: str
    first_arrival_at: datetime
    last_arrival_at: datetime
    deadline_at: datetime | None
    completed_at: datetime | None
    rejected_count: int = 0  # instances an IOCM rejection note withdrew


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """One entry of the completion queue, as history."""

    series_id: int
    version: int
    instance_count: int
    reason: str
    completed_at: datetime
    consumed_at: datetime | None


@dataclass(frozen=True, slots=True)
class AssociationSummary:
    id: int
    calling_ae: str
    peer_host: str
    state: str
    started_at: datetime
    ended_at: datetime | None
    instance_count: int


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    spool_name: str
    series_version: int


class IndexReads:
    """Read queries over the index tables (``_sessions``: the database's read sessions)."""

    _sessions: Callable[[], AbstractContextManager[Session]]

    def list_series(self, limit: int = 1000) -> list[SeriesSummary]:
        with self._sessions() as session:
            rows = session.scalars(
                select(SeriesRow).order_by(SeriesRow.last_arrival_at.desc()).limit(limit)
            )
            return [_summary(row) for row in rows]

    def find_series(self, series_uid: str) -> SeriesSummary | None:
        with self._sessions() as session:
            row = session.scalar(select(SeriesRow).where(SeriesRow.series_uid == series_uid))
            return None if row is None else _summary(row)

    def series_by_id(self, series_id: int) -> SeriesSummary | None:
        with self._sessions() as session:
            row = session.get(SeriesRow, series_id)
            return None if row is None else _summary(row)

    def series_attributes(self, series_id: int) -> dict[str, list[JSONValue]]:
        with self._sessions() as session:
            row = session.get(SeriesRow, series_id)
            return {} if row is None else dict(row.attributes)

    def instances_of(self, series_id: int) -> list[InstanceSummary]:
        with self._sessions() as session:
            rows = session.scalars(
                select(InstanceRow)
                .where(InstanceRow.series_id == series_id)
                .order_by(InstanceRow.id)
            )
            return [
                InstanceSummary(
                    id=r.id,
                    sop_class_uid=r.sop_class_uid,
                    sop_instance_uid=r.sop_instance_uid,
                    transfer_syntax_uid=r.transfer_syntax_uid,
                    size=r.size,
                    spool_name=r.spool_name,
                    series_version=r.series_version,
                )
                for r in rows
            ]

    def completions(self, series_id: int) -> list[CompletionRecord]:
        """Every completion of a series, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(CompletionRow)
                .where(CompletionRow.series_id == series_id)
                .order_by(CompletionRow.id)
            )
            return [
                CompletionRecord(
                    series_id=r.series_id,
                    version=r.version,
                    instance_count=r.instance_count,
                    reason=r.reason,
                    completed_at=r.completed_at,
                    consumed_at=r.consumed_at,
                )
                for r in rows
            ]

    def associations(self) -> list[AssociationSummary]:
        """Every association, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(select(AssociationRow).order_by(AssociationRow.id))
            return [
                AssociationSummary(
                    id=r.id,
                    calling_ae=r.calling_ae,
                    peer_host=r.peer_host,
                    state=r.state,
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                    instance_count=r.instance_count,
                )
                for r in rows
            ]

    def series_origin(self, series_id: int, version: int) -> dict[str, list[str]]:
        """Who sent a series version: distinct calling/called AE titles and hosts."""
        with self._sessions() as session:
            query = (
                select(
                    AssociationRow.calling_ae, AssociationRow.called_ae, AssociationRow.peer_host
                )
                .join(InstanceRow, InstanceRow.association_id == AssociationRow.id)
                .where(InstanceRow.series_id == series_id)
                .where(InstanceRow.series_version == version)
                .distinct()
            )
            rows = session.execute(query).all()
        return {
            "CallingAETitle": sorted({r[0] for r in rows}),
            "CalledAETitle": sorted({r[1] for r in rows}),
            "SourceHost": sorted({r[2] for r in rows}),
        }

    def spool_names(self, prefix: str | None = None) -> set[str]:
        """Every spool file the index references (purged series' files excluded); only
        those under ``prefix/`` (one node's on shared storage) when given."""
        query = (
            select(InstanceRow.spool_name)
            .join(SeriesRow, SeriesRow.id == InstanceRow.series_id)
            .where(SeriesRow.purged_at.is_(None))
        )
        if prefix is not None:
            query = query.where(InstanceRow.spool_name.startswith(f"{prefix}/", autoescape=True))
        with self._sessions() as session:
            return set(session.scalars(query))

    def count_instances(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count(InstanceRow.id))) or 0)


def _summary(row: SeriesRow) -> SeriesSummary:
    return SeriesSummary(
        id=row.id,
        study_uid=row.study_uid,
        series_uid=row.series_uid,
        modality=row.modality,
        description=row.description,
        body_part=row.body_part,
        instance_count=row.instance_count,
        version=row.version,
        state=row.state,
        first_arrival_at=row.first_arrival_at,
        last_arrival_at=row.last_arrival_at,
        deadline_at=row.deadline_at,
        completed_at=row.completed_at,
        rejected_count=row.rejected_count or 0,
    )
