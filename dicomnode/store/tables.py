"""The index schema (SQLAlchemy 2). SQLite by default; written to suit PostgreSQL too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
)
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


class ClippedString(TypeDecorator[str]):
    """Free text cut to the column's length on the way in.

    SQLite keeps any length in a VARCHAR(n); PostgreSQL refuses the whole write. For
    text a peer or a failure supplies (a malformed Modality, a long error), a cut value
    is better than an instance refused or a state change lost. Identifiers stay plain
    ``String``: one too long is a fault to see, not to hide.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        length = cast(String, self.impl_instance).length
        return value if value is None or length is None else value[:length]


# 64-bit integers on every database, as SQLite's always are: on PostgreSQL a plain
# INTEGER is 32-bit, and a larger id (a typed-in job number) failed the query instead of
# finding nothing. SQLite keeps INTEGER, which its row ids need to autoincrement.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: BigInt,
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
    # The node that accepted it (a cluster's start-up aborts only its own open ones).
    node_id: Mapped[str | None] = mapped_column(String(128), default=None)


class SeriesRow(Base):
    """A series as received so far, with the state of its completion timers."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(ClippedString(16))
    description: Mapped[str | None] = mapped_column(ClippedString(256))
    body_part: Mapped[str | None] = mapped_column(ClippedString(64))
    # Routing attributes: keyword -> list of the distinct values seen across instances.
    attributes: Mapped[dict[str, Any]]
    instance_count: Mapped[int]
    first_arrival_at: Mapped[datetime]
    last_arrival_at: Mapped[datetime]
    # A series that completes and then receives more becomes a new version.
    version: Mapped[int]
    version_started_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), index=True)  # receiving | complete
    # "received" from a peer, or "result" when a pipeline of ours wrote it (not routed).
    origin: Mapped[str] = mapped_column(String(16), default="received")
    deadline_at: Mapped[datetime | None]
    deadline_reason: Mapped[str | None] = mapped_column(String(16))
    last_association_id: Mapped[int | None]
    released_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # Set when retention deleted the series' files; its rows stay, for history.
    purged_at: Mapped[datetime | None] = mapped_column(default=None)
    # Instances withdrawn by an IOCM rejection note, counted when a note or the series is
    # routed (dicomnode.routing.rejection).
    rejected_count: Mapped[int] = mapped_column(default=0)


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
    # <node id>/ab/<random>.dcm on shared storage, ab/<random>.dcm on a single node.
    spool_name: Mapped[str] = mapped_column(String(128), unique=True)


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
    # Routing this entry failed this many times; the last reason; when to try again, or
    # when the router gave up (a permanent failure, which an operator can retry).
    failures: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(ClippedString(1024), default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    # The claim (docs/scaling.md): the node working on it, until when, unless renewed.
    owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # Set on an operator's re-route of a version already routed (docs/routing.md): who
    # asked. The router then replaces that version's decision and says so.
    rerouted_by: Mapped[str | None] = mapped_column(ClippedString(128), default=None)


class RulesVersionRow(Base):
    """A set of rule files that was in force, so any routing can be traced to it."""

    __tablename__ = "rules_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the files
    loaded_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(ClippedString(128))  # who changed them, where known
    files: Mapped[dict[str, Any]]  # file name -> content, for audit


class RoutingDecisionRow(Base):
    """What the rules decided for one completed series version (exactly one per version)."""

    __tablename__ = "routing_decisions"
    __table_args__ = (UniqueConstraint("series_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    version: Mapped[int]
    rules_version: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime]
    unrouted: Mapped[bool]
    # {"matched": [...], "forward_to": [...], "pipelines": [{rule, pipeline, send_to}]}
    decision: Mapped[dict[str, Any]]


class SendRow(Base):
    """One durable outbox entry: a series version's instances to one destination."""

    __tablename__ = "sends"
    __table_args__ = (Index("ix_sends_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    series_version: Mapped[int]
    origin: Mapped[str] = mapped_column(String(128))  # e.g. "rule:ct-forward"
    state: Mapped[str] = mapped_column(String(16))  # pending | sending | done | failed
    reason: Mapped[str | None] = mapped_column(ClippedString(512))
    created_at: Mapped[datetime]
    age_from: Mapped[datetime]  # the maximum age counts from here (a manual retry resets it)
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    finished_at: Mapped[datetime | None]
    instance_count: Mapped[int]
    sent_count: Mapped[int] = mapped_column(default=0)
    # The claim (docs/scaling.md): the node working on it, until when, unless renewed.
    owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # Storage commitment (docs/admin-guide.md): None (not asked) | requested | committed |
    # failed | timed_out | unrequested (the N-ACTION itself failed).
    commitment: Mapped[str | None] = mapped_column(String(16), default=None)
    commitment_uid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    commitment_due: Mapped[datetime | None] = mapped_column(default=None)


class SendItemRow(Base):
    """One instance of a send, and whether the destination has acknowledged it."""

    __tablename__ = "send_items"
    __table_args__ = (UniqueConstraint("send_id", "instance_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"))
    state: Mapped[str] = mapped_column(String(16))  # pending | sent | failed
    status: Mapped[int | None]


class SendAttemptRow(Base):
    """One attempt at a send: when, how it ended, with which DIMSE status."""

    __tablename__ = "send_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"), index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | temporary | permanent
    status: Mapped[int | None]
    detail: Mapped[str] = mapped_column(ClippedString(512))
    sent: Mapped[int]


class JobRow(Base):
    """One pipeline run on one series version, durable from routing to results."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("series_id", "series_version", "rule", "pipeline"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    series_version: Mapped[int]
    rule: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    send_to: Mapped[dict[str, Any]]  # {"destinations": [...]}
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(ClippedString(1024))
    # Failed runs, counted for metrics; a pending job waits until next_attempt_at (backoff).
    failures: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # [{"stage": "load", "seconds": 1.2, "at": "..."}, ...] and the result summary
    timeline: Mapped[dict[str, Any]]
    # The claim (docs/scaling.md): the node working on it, until when, unless renewed.
    owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # Shadow mode (docs/shadow.md): results kept, nothing sent; rows before 0005 read false.
    shadow: Mapped[bool] = mapped_column(default=False, server_default=false())


class RejectionRow(Base):
    """An instance an IOCM rejection note withdrew, whether it has arrived yet or not.

    Keyed by SOP Instance UID, not by instance row: a note may come before the instances
    it names, which are then rejected when their series is routed.
    """

    __tablename__ = "rejections"
    # By UID pair: a note naming an instance under another series' UID (rejecting
    # nothing) must not keep a later, right note from rejecting it.
    __table_args__ = (UniqueConstraint("sop_instance_uid", "series_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(16))  # 113001 | 113037 | 113038 | 113039
    meaning: Mapped[str] = mapped_column(String(64))
    note_sop_instance_uid: Mapped[str] = mapped_column(String(64))
    note_series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    note_version: Mapped[int]
    noted_at: Mapped[datetime]


class NodeRow(Base):
    """A node process of the cluster, as it last said (the heartbeat renews its leases)."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(ClippedString(128))
    pid: Mapped[int]
    version: Mapped[str] = mapped_column(ClippedString(64))
    roles: Mapped[dict[str, Any]]  # {"roles": ["receive", ...]}
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)
