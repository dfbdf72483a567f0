"""The index schema (SQLAlchemy 2). SQLite by default; written to suit PostgreSQL too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
    }


class AssociationRow(Base):
    """One DICOM association a peer opened to us."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    peer_host: Mapped[str] = mapped_column(String(64))
    peer_port: Mapped[int]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))  # open | released | aborted
    instance_count: Mapped[int] = mapped_column(default=0)


class SeriesRow(Base):
    """A series as received so far, with the state of its completion timers."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(256))
    body_part: Mapped[str | None] = mapped_column(String(64))
    # Routing attributes: keyword -> list of the distinct values seen across instances.
    attributes: Mapped[dict[str, Any]]
    instance_count: Mapped[int]
    first_arrival_at: Mapped[datetime]
    last_arrival_at: Mapped[datetime]
    # A series that completes and then receives more becomes a new version.
    version: Mapped[int]
    version_started_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), index=True)  # receiving | complete
    deadline_at: Mapped[datetime | None]
    deadline_reason: Mapped[str | None] = mapped_column(String(16))
    last_association_id: Mapped[int | None]
    released_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class InstanceRow(Base):
    """One stored instance and the spool file that holds it."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    series_version: Mapped[int]
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str] = mapped_column(String(16))
    association_id: Mapped[int | None] = mapped_column(ForeignKey("associations.id"))
    received_at: Mapped[datetime]
    spool_name: Mapped[str] = mapped_column(String(64), unique=True)


class CompletionRow(Base):
    """The durable queue of completed series versions that routing consumes."""

    __tablename__ = "series_completions"
    __table_args__ = (Index("ix_completions_unconsumed", "consumed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    version: Mapped[int]
    instance_count: Mapped[int]
    reason: Mapped[str] = mapped_column(String(16))  # quiet | settle | max_wait
    completed_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
