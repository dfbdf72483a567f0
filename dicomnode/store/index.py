"""The index: every stored instance, its series and associations.

Every method that changes state commits before it returns, so what it reports is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dicomnode.config import CompletionPolicy
from dicomnode.domain import Peer, ReceivedInstance, StoreOutcome
from dicomnode.store.database import Database
from dicomnode.store.deadline import Deadline, completion_deadline
from dicomnode.store.header import InstanceHeader, JSONValue
from dicomnode.store.notify import ROUTE, notify
from dicomnode.store.spool import SpooledFile
from dicomnode.store.tables import (
    AssociationRow,
    CompletionRow,
    InstanceRow,
    SeriesRow,
)

PolicyLookup = Callable[[str | None], CompletionPolicy]
_MAX_DISTINCT_VALUES = 16


class _StaleSeriesError(Exception):
    """A remembered series row changed in the database since; read it and start again."""


class _KnownInstanceError(Exception):
    """The instance guessed new is in the index already; look it up and start again."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording an instance changed."""

    instance_id: int
    series_id: int
    outcome: StoreOutcome
    opened: bool  # a series (or a new version of one) started receiving
    deadline: Deadline
    obsolete_file: str | None  # a spool file no longer referenced, to delete


@dataclass(frozen=True, slots=True)
class Completion:
    """A series version that just completed."""

    series_id: int
    study_uid: str
    series_uid: str
    version: int
    instance_count: int
    reason: str
    modality: str | None


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


class Index:
    """Stored instances, their series and the associations that brought them."""

    def __init__(self, database: Database | str, node_id: str | None = None) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self.node_id = node_id  # set on the associations this node accepts
        self._writing = self.database.writing
        self._sessions = self.database.reading
        # Series UID -> its row as record_instance last committed it: the next instance
        # of the series skips reading it (see _record for why that stays right).
        self._series_rows: dict[str, dict[str, Any]] = {}

    def open(self) -> None:
        """Create the schema where missing."""
        self.database.create_schema()

    def close(self) -> None:
        self.database.close()

    # -- associations ---------------------------------------------------------------

    def open_association(self, peer: Peer, now: datetime) -> int:
        with self._writing() as session:
            row = AssociationRow(
                calling_ae=peer.calling_ae,
                called_ae=peer.called_ae,
                peer_host=peer.host,
                peer_port=peer.port,
                started_at=now,
                state="open",
                node_id=self.node_id,
            )
            session.add(row)
            session.flush()
            return row.id

    def close_association(
        self, association_id: int, released: bool, now: datetime, policy: PolicyLookup
    ) -> list[tuple[int, Deadline]]:
        """Record the end of an association; a release starts the settle clock.

        Returns the receiving series whose last instance came over it, with their new
        deadlines.
        """
        moved: list[tuple[int, Deadline]] = []
        with self._writing() as session:
            row = session.get(AssociationRow, association_id)
            if row is None or row.state != "open":
                return moved
            row.state = "released" if released else "aborted"
            row.ended_at = now
            row.instance_count = int(
                session.scalar(
                    select(func.count(InstanceRow.id)).where(
                        InstanceRow.association_id == association_id
                    )
                )
                or 0
            )
            if not released:
                return moved
            rows = session.scalars(
                select(SeriesRow).where(
                    SeriesRow.state == "receiving",
                    SeriesRow.last_association_id == association_id,
                )
            )
            for series in rows:
                series.released_at = now
                deadline = _deadline(series, policy)
                series.deadline_at, series.deadline_reason = deadline.at, deadline.reason
                moved.append((series.id, deadline))
        return moved

    def abort_open_associations(self, now: datetime) -> int:
        """Mark associations this node's crash left open as aborted (on SQLite, where it
        is the only node, any); returns how many."""
        with self._writing() as session:
            left_open = AssociationRow.state == "open"
            if session.get_bind().dialect.name != "sqlite":
                left_open = and_(left_open, AssociationRow.node_id == self.node_id)
            result = session.execute(
                update(AssociationRow).where(left_open).values(state="aborted", ended_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it

    # -- instances ------------------------------------------------------------------

    def record_instance(
        self,
        header: InstanceHeader,
        spooled: SpooledFile,
        received: ReceivedInstance,
        now: datetime,
        policy: PolicyLookup,
        before_commit: Callable[[], object] | None = None,
    ) -> Recorded:
        """Index a spooled instance and move its series' completion clock.

        ``before_commit`` runs inside the transaction, after its statements: the ingest
        waits there for the file to be synced (an exception rolls everything back).

        This runs once per received instance, on the association's thread, before its
        acknowledgement: it uses a plain SQLAlchemy Core connection
        and statements built once, at import (the ORM's unit of work cost several
        milliseconds here, its session ~10 % and building a statement per call ~7 % of
        the node's Python time).
        """
        uid = header.series_uid
        cached, new_instance = self._series_rows.get(uid), True
        # Each retry switches one guess off, or (a cluster) finds the series another node
        # created meanwhile: four passes at most.
        for _attempt in range(4):
            try:
                with self.database.writing_core() as conn:
                    recorded, state = self._record(
                        conn, cached, new_instance, header, spooled, received, now, policy
                    )
                    if before_commit is not None:
                        before_commit()
            except _StaleSeriesError:
                self._series_rows.pop(uid, None)
                cached = None
                continue
            except _KnownInstanceError:
                new_instance = False
                continue
            except BaseException:
                self._series_rows.pop(uid, None)
                raise
            if len(self._series_rows) >= _SERIES_ROWS_KEPT:
                self._series_rows.clear()
            self._series_rows[uid] = state
            return recorded
        raise AssertionError("unreachable: the fourth pass guesses nothing")

    @staticmethod
    def _record(
        conn: Connection,
        cached: dict[str, Any] | None,
        new_instance: bool,
        header: InstanceHeader,
        spooled: SpooledFile,
        received: ReceivedInstance,
        now: datetime,
        policy: PolicyLookup,
    ) -> tuple[Recorded, dict[str, Any]]:
        """The statements of ``record_instance``; returns the series row as written.

        Two guesses save a read each, and a wrong one rolls the transaction back for the
        caller to start again without it. ``cached`` (the series row as this index last
        committed it): the series is not read, and its update applies only if the row
        still has the version, state and instance count it had then, else
        ``_StaleSeriesError``; whatever else changes a series row (a release moving its
        deadline) is written over here anyway. ``new_instance``: the SOP Instance UID is
        not looked up first; the insert does nothing if it exists (PostgreSQL, SQLite),
        and ``_KnownInstanceError`` sends the caller to the re-sent-instance path.
        """
        if cached is not None:
            series: Any = cached
        else:
            series = conn.execute(_SERIES_BY_UID, {"uid": header.series_uid}).mappings().first()
        insert_new = _INSERT_NEW_INSTANCE.get(conn.dialect.name) if new_instance else None
        existing = None
        if insert_new is None:
            existing = conn.execute(_INSTANCE_BY_UID, {"uid": header.sop_instance_uid}).first()
        if existing is not None and series is not None and existing.sha256 == spooled.sha256:
            recorded = Recorded(
                instance_id=existing.id,
                series_id=existing.series_id,
                outcome=StoreOutcome.DUPLICATE,
                opened=False,
                deadline=_deadline_of(dict(series), policy),
                obsolete_file=spooled.name,
            )
            return recorded, dict(series)
        opened = False
        if series is None:
            state = _new_series_values(header, now)
            insert_series = _INSERT_SERIES.get(conn.dialect.name, _INSERT_ANY_SERIES)
            inserted_series = conn.execute(insert_series, state).first()
            if inserted_series is None:  # another node's instance created it meanwhile
                raise _StaleSeriesError
            state["id"] = inserted_series[0]
            opened = True
            changes: dict[str, Any] = {}
        else:
            state = dict(series)
            changes = {}
            if state["state"] == "complete":
                changes = {
                    "version": state["version"] + 1,
                    "version_started_at": now,
                    "state": "receiving",
                    "completed_at": None,
                }
                opened = True
        values = {
            "series_version": changes.get("version", state["version"]),
            "sop_class_uid": header.sop_class_uid,
            "study_uid": header.study_uid,
            "transfer_syntax_uid": received.transfer_syntax_uid,
            "size": spooled.size,
            "sha256": spooled.sha256,
            "calling_ae": received.peer.calling_ae,
            "association_id": received.association_id or None,
            "received_at": now,
            "spool_name": spooled.name,
            "series_id": state["id"],
        }
        obsolete = None
        if existing is None:
            inserted_row = conn.execute(
                _INSERT_INSTANCE if insert_new is None else insert_new,
                {"sop_instance_uid": header.sop_instance_uid, **values},
            ).first()
            if inserted_row is None:  # the insert did nothing: the UID is known
                raise _KnownInstanceError
            instance_id = inserted_row[0]
            changes["instance_count"] = state["instance_count"] + 1
            outcome = StoreOutcome.STORED
        else:
            instance_id, obsolete = existing.id, existing.spool_name
            conn.execute(_UPDATE_INSTANCE, {"where_instance_id": existing.id, **values})
            outcome = StoreOutcome.REPLACED
        merged = _merge_attributes(state["attributes"], header.attributes)
        if merged is not state["attributes"]:
            changes["attributes"] = merged
        changes.update(
            last_arrival_at=now,
            last_association_id=received.association_id or None,
            released_at=None,
        )
        state.update(changes)
        deadline = _deadline_of(state, policy)
        changes.update(deadline_at=deadline.at, deadline_reason=deadline.reason)
        if cached is None:
            conn.execute(_UPDATE_SERIES, {"where_series_id": state["id"], **changes})
        else:
            guard = {
                "where_series_id": state["id"],
                "where_version": cached["version"],
                "where_state": cached["state"],
                "where_instance_count": cached["instance_count"],
            }
            if conn.execute(_UPDATE_CACHED_SERIES, {**guard, **changes}).rowcount != 1:
                raise _StaleSeriesError
        state.update(deadline_at=deadline.at, deadline_reason=deadline.reason)
        recorded = Recorded(
            instance_id=int(instance_id),
            series_id=int(state["id"]),
            outcome=outcome,
            opened=opened,
            deadline=deadline,
            obsolete_file=obsolete,
        )
        return recorded, state

    @staticmethod
    def record_result(
        session: Session,
        header: InstanceHeader,
        spooled: SpooledFile,
        transfer_syntax_uid: str,
        our_ae: str,
        now: datetime,
    ) -> int:
        """Index a result the node wrote (SEG, SR) inside the caller's transaction.

        Its series is complete at once and never routed: results go where the job's
        rule sends them, through the outbox. Returns the series id.
        """
        series = session.scalar(select(SeriesRow).where(SeriesRow.series_uid == header.series_uid))
        if series is None:
            series = _new_series(header, now)
            series.origin, series.state, series.completed_at = "result", "complete", now
            session.add(series)
            session.flush()
        row = InstanceRow(sop_instance_uid=header.sop_instance_uid, association_id=None)
        session.add(row)
        series.instance_count += 1
        series.attributes = _merge_attributes(series.attributes, header.attributes)
        row.series_id, row.series_version = series.id, series.version
        row.sop_class_uid, row.study_uid = header.sop_class_uid, header.study_uid
        row.transfer_syntax_uid, row.size, row.sha256 = (
            transfer_syntax_uid,
            spooled.size,
            spooled.sha256,
        )
        row.calling_ae, row.received_at, row.spool_name = our_ae, now, spooled.name
        session.flush()
        return series.id

    # -- completion -----------------------------------------------------------------

    def complete_if_due(
        self, series_id: int, now: datetime, policy: PolicyLookup
    ) -> Completion | Deadline | None:
        """Complete the series if its deadline has passed.

        Returns the Completion, or the later Deadline to wait for, or None when the
        series is not receiving (already complete or unknown).
        """
        with self._writing() as session:
            # Locked: in a cluster every node that received some of the series may look
            # at once; the first completes it, the others then find it complete.
            series = session.get(SeriesRow, series_id, with_for_update=True)
            if series is None or series.state != "receiving":
                return None
            deadline = _deadline(series, policy)
            if deadline.at > now:
                series.deadline_at, series.deadline_reason = deadline.at, deadline.reason
                return deadline
            series.state = "complete"
            series.completed_at = now
            series.deadline_at = None
            session.add(
                CompletionRow(
                    series_id=series.id,
                    version=series.version,
                    instance_count=series.instance_count,
                    reason=deadline.reason,
                    completed_at=now,
                )
            )
            notify(session, ROUTE)  # routers on other nodes (a receive-only node has none)
            return Completion(
                series_id=series.id,
                study_uid=series.study_uid,
                series_uid=series.series_uid,
                version=series.version,
                instance_count=series.instance_count,
                reason=deadline.reason,
                modality=series.modality,
            )

    def overdue_series(self, now: datetime) -> list[int]:
        """Series still receiving past their stored deadline: in a cluster, those whose
        timer was on a node that died (every node sweeps for them)."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(SeriesRow.id).where(
                        SeriesRow.state == "receiving", SeriesRow.deadline_at <= now
                    )
                )
            )

    def receiving_deadlines(self) -> list[tuple[int, datetime]]:
        """Every series still receiving, with its stored deadline."""
        with self._sessions() as session:
            rows = session.execute(
                select(SeriesRow.id, SeriesRow.deadline_at, SeriesRow.last_arrival_at).where(
                    SeriesRow.state == "receiving"
                )
            )
            return [(sid, deadline or last) for sid, deadline, last in rows]

    def unconsumed_completions(self) -> list[tuple[int, int, int]]:
        """The durable queue's waiting entries: (entry id, series id, version)."""
        with self._sessions() as session:
            rows = session.execute(
                select(CompletionRow.id, CompletionRow.series_id, CompletionRow.version)
                .where(CompletionRow.consumed_at.is_(None))
                .order_by(CompletionRow.id)
            )
            return [(a, b, c) for a, b, c in rows]

    def consume_completion(self, entry_id: int, now: datetime) -> None:
        with self._writing() as session:
            session.execute(
                update(CompletionRow).where(CompletionRow.id == entry_id).values(consumed_at=now)
            )

    # -- reading --------------------------------------------------------------------

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


_SERIES = cast(Table, SeriesRow.__table__)
_INSTANCES = cast(Table, InstanceRow.__table__)
# Locked on PostgreSQL (SQLite leaves FOR UPDATE out): nodes of a cluster receiving the
# same series at once take turns at its row instead of counting over each other.
_SERIES_BY_UID = select(_SERIES).where(_SERIES.c.series_uid == bindparam("uid")).with_for_update()
_INSTANCE_BY_UID = select(
    _INSTANCES.c.id, _INSTANCES.c.sha256, _INSTANCES.c.series_id, _INSTANCES.c.spool_name
).where(_INSTANCES.c.sop_instance_uid == bindparam("uid"))
# Executed with a dict of column values: the VALUES / SET clause is the dict's keys. By
# dialect, as for instances: a series another node inserted meanwhile returns no row.
_INSERT_SERIES: dict[str, Any] = {
    "sqlite": sqlite.insert(_SERIES)
    .on_conflict_do_nothing(index_elements=[_SERIES.c.series_uid])
    .returning(_SERIES.c.id),
    "postgresql": postgresql.insert(_SERIES)
    .on_conflict_do_nothing(index_elements=[_SERIES.c.series_uid])
    .returning(_SERIES.c.id),
}
_INSERT_ANY_SERIES = insert(_SERIES).returning(_SERIES.c.id)
# Instance inserts return the new id: a row back means inserted, none means the
# conflict clause did nothing. ``rowcount`` cannot tell: psycopg 3 reports -1 for any
# INSERT ... RETURNING, which SQLAlchemy emits to learn the primary key.
_INSERT_INSTANCE = insert(_INSTANCES).returning(_INSTANCES.c.id)
# By dialect: the instance insert that does nothing where the SOP Instance UID exists.
_INSERT_NEW_INSTANCE: dict[str, Any] = {
    "sqlite": sqlite.insert(_INSTANCES)
    .on_conflict_do_nothing(index_elements=[_INSTANCES.c.sop_instance_uid])
    .returning(_INSTANCES.c.id),
    "postgresql": postgresql.insert(_INSTANCES)
    .on_conflict_do_nothing(index_elements=[_INSTANCES.c.sop_instance_uid])
    .returning(_INSTANCES.c.id),
}
_UPDATE_SERIES = update(_SERIES).where(_SERIES.c.id == bindparam("where_series_id"))
_UPDATE_CACHED_SERIES = _UPDATE_SERIES.where(
    _SERIES.c.version == bindparam("where_version"),
    _SERIES.c.state == bindparam("where_state"),
    _SERIES.c.instance_count == bindparam("where_instance_count"),
)
_SERIES_ROWS_KEPT = 256  # series rows record_instance remembers (series being received)
_UPDATE_INSTANCE = update(_INSTANCES).where(_INSTANCES.c.id == bindparam("where_instance_id"))


def _new_series_values(header: InstanceHeader, now: datetime) -> dict[str, Any]:
    attrs = header.attributes
    return {
        "study_uid": header.study_uid,
        "series_uid": header.series_uid,
        "modality": header.modality,
        "description": _text(attrs.get("SeriesDescription")),
        "body_part": _text(attrs.get("BodyPartExamined")),
        "attributes": {},
        "instance_count": 0,
        "first_arrival_at": now,
        "last_arrival_at": now,
        "version": 1,
        "version_started_at": now,
        "state": "receiving",
        "origin": "received",
        "released_at": None,
    }


def _deadline_of(series: dict[str, Any], policy: PolicyLookup) -> Deadline:
    return completion_deadline(
        policy(series["modality"]),
        series["version_started_at"],
        series["last_arrival_at"],
        series["released_at"],
    )


def _new_series(header: InstanceHeader, now: datetime) -> SeriesRow:
    attrs = header.attributes
    return SeriesRow(
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        modality=header.modality,
        description=_text(attrs.get("SeriesDescription")),
        body_part=_text(attrs.get("BodyPartExamined")),
        attributes={},
        instance_count=0,
        first_arrival_at=now,
        last_arrival_at=now,
        version=1,
        version_started_at=now,
        state="receiving",
    )


def _fill_instance(
    row: InstanceRow,
    header: InstanceHeader,
    spooled: SpooledFile,
    received: ReceivedInstance,
    series: SeriesRow,
    now: datetime,
) -> None:
    row.series_id = series.id
    row.series_version = series.version
    row.sop_class_uid = header.sop_class_uid
    row.study_uid = header.study_uid
    row.transfer_syntax_uid = received.transfer_syntax_uid
    row.size = spooled.size
    row.sha256 = spooled.sha256
    row.calling_ae = received.peer.calling_ae
    row.association_id = received.association_id
    row.received_at = now
    row.spool_name = spooled.name


def _deadline(series: SeriesRow, policy: PolicyLookup) -> Deadline:
    return completion_deadline(
        policy(series.modality),
        series.version_started_at,
        series.last_arrival_at,
        series.released_at,
    )


def _merge_attributes(
    known: dict[str, Any], seen: dict[str, JSONValue]
) -> dict[str, list[JSONValue]]:
    """Keep each attribute's distinct values, so rules can tell uniform from mixed.

    Returns ``known`` itself when nothing is new (most instances of a series), and
    copies it only on the first new value.
    """
    merged: dict[str, list[JSONValue]] | None = None
    for keyword, value in seen.items():
        values = (known if merged is None else merged).get(keyword)
        if values is not None and (value in values or len(values) >= _MAX_DISTINCT_VALUES):
            continue
        if merged is None:
            merged = {k: list(v) for k, v in known.items()}
        merged.setdefault(keyword, []).append(value)
    if merged is not None:
        return merged
    return known if known else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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
