"""The index: every stored instance, its series and associations.

Every method that changes state commits before it returns, so what it reports is durable.
The series' transitions are pure functions in :mod:`.series_state`, the per-instance
statements in :mod:`.index_sql`, and the read queries in :mod:`.index_reads` (which
``Index`` inherits); what is left here is the writing, in transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicomnode.domain import Peer, ReceivedInstance, StoreOutcome
from dicomnode.errors import StorageError
from dicomnode.store import index_sql as sql
from dicomnode.store.database import Database
from dicomnode.store.deadline import Deadline, completion_deadline
from dicomnode.store.header import InstanceHeader
from dicomnode.store.index_reads import (
    AssociationSummary,
    CompletionRecord,
    IndexReads,
    InstanceSummary,
    SeriesSummary,
)
from dicomnode.store.notify import ROUTE, notify
from dicomnode.store.series_state import (
    PolicyLookup,
    SeriesState,
    arrival,
    deadline_of,
    merge_attributes,
    new_series,
    reopened,
)
from dicomnode.store.spool import SpooledFile
from dicomnode.store.tables import (
    AssociationRow,
    CompletionRow,
    InstanceRow,
    SeriesRow,
)

__all__ = [
    "AssociationSummary",
    "Completion",
    "CompletionRecord",
    "Index",
    "InstanceSummary",
    "PolicyLookup",
    "Recorded",
    "SeriesSummary",
]

_SERIES_ROWS_KEPT = 256  # series rows record_instance remembers (series being received)


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


class Index(IndexReads):
    """Stored instances, their series and the associations that brought them."""

    def __init__(self, database: Database | str, node_id: str | None = None) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self.node_id = node_id  # set on the associations this node accepts
        self._writing = self.database.writing
        self._sessions = self.database.reading
        # Series UID -> its row as record_instance last committed it: the next instance
        # of the series skips reading it (see _record for why that stays right).
        self._series_rows: dict[str, SeriesState] = {}

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
        # created meanwhile, or the remembered row is gone: five passes at most.
        for _attempt in range(5):
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
            except StorageError as exc:
                if cached is None or not isinstance(exc.__cause__, IntegrityError):
                    self._series_rows.pop(uid, None)
                    raise
                # The remembered row is gone (index pruning, here or on another node):
                # the instance's foreign key names no series. Read it afresh.
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
        raise AssertionError("unreachable: the last pass guesses nothing")

    @staticmethod
    def _record(
        conn: Connection,
        cached: SeriesState | None,
        new_instance: bool,
        header: InstanceHeader,
        spooled: SpooledFile,
        received: ReceivedInstance,
        now: datetime,
        policy: PolicyLookup,
    ) -> tuple[Recorded, SeriesState]:
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
            series = conn.execute(sql.SERIES_BY_UID, {"uid": header.series_uid}).mappings().first()
        insert_new = sql.INSERT_NEW_INSTANCE.get(conn.dialect.name) if new_instance else None
        existing = None
        if insert_new is None:
            existing = conn.execute(sql.INSTANCE_BY_UID, {"uid": header.sop_instance_uid}).first()
        if existing is not None and series is not None and existing.sha256 == spooled.sha256:
            known = cast(SeriesState, dict(series))
            recorded = Recorded(
                instance_id=existing.id,
                series_id=existing.series_id,
                outcome=StoreOutcome.DUPLICATE,
                opened=False,
                deadline=deadline_of(known, policy),
                obsolete_file=spooled.name,
            )
            return recorded, known
        changes: dict[str, Any]
        if series is None:
            state = new_series(header, now)
            insert_series = sql.INSERT_SERIES.get(conn.dialect.name, sql.INSERT_ANY_SERIES)
            inserted_series = conn.execute(insert_series, state).first()
            if inserted_series is None:  # another node's instance created it meanwhile
                raise _StaleSeriesError
            state["id"] = inserted_series[0]
            opened, changes = True, {}
        else:
            state = cast(SeriesState, dict(series))
            changes = reopened(state, now)
            opened = bool(changes)
        version = changes.get("version", state["version"])
        values = _instance_values(header, spooled, received, now, state["id"], version)
        obsolete = None
        if existing is None:
            inserted_row = conn.execute(
                sql.INSERT_INSTANCE if insert_new is None else insert_new,
                {"sop_instance_uid": header.sop_instance_uid, **values},
            ).first()
            if inserted_row is None:  # the insert did nothing: the UID is known
                raise _KnownInstanceError
            instance_id = inserted_row[0]
            outcome = StoreOutcome.STORED
        else:
            instance_id, obsolete = existing.id, existing.spool_name
            conn.execute(sql.UPDATE_INSTANCE, {"where_instance_id": existing.id, **values})
            outcome = StoreOutcome.REPLACED
        changes.update(
            arrival(
                state,
                header.attributes,
                now,
                received.association_id or None,
                counted=existing is None,
            )
        )
        state.update(changes)  # type: ignore[typeddict-item]  # the columns arrival names
        deadline = deadline_of(state, policy)
        changes.update(deadline_at=deadline.at, deadline_reason=deadline.reason)
        _update_series(conn, state["id"], cached, changes)
        state["deadline_at"], state["deadline_reason"] = deadline.at, deadline.reason
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
            series = SeriesRow(**new_series(header, now))
            series.origin, series.state, series.completed_at = "result", "complete", now
            session.add(series)
            session.flush()
        row = InstanceRow(sop_instance_uid=header.sop_instance_uid, association_id=None)
        session.add(row)
        series.instance_count += 1
        series.attributes = merge_attributes(series.attributes, header.attributes)
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


def _instance_values(
    header: InstanceHeader,
    spooled: SpooledFile,
    received: ReceivedInstance,
    now: datetime,
    series_id: int,
    series_version: int,
) -> dict[str, Any]:
    """An instance row's columns (its SOP Instance UID aside, which never changes)."""
    return {
        "series_version": series_version,
        "sop_class_uid": header.sop_class_uid,
        "study_uid": header.study_uid,
        "transfer_syntax_uid": received.transfer_syntax_uid,
        "size": spooled.size,
        "sha256": spooled.sha256,
        "calling_ae": received.peer.calling_ae,
        "association_id": received.association_id or None,
        "received_at": now,
        "spool_name": spooled.name,
        "series_id": series_id,
    }


def _update_series(
    conn: Connection, series_id: int, cached: SeriesState | None, changes: dict[str, Any]
) -> None:
    """Write ``changes``; over a ``cached`` row only if the row is still as remembered."""
    if cached is None:
        conn.execute(sql.UPDATE_SERIES, {"where_series_id": series_id, **changes})
        return
    guard = {
        "where_series_id": series_id,
        "where_version": cached["version"],
        "where_state": cached["state"],
        "where_instance_count": cached["instance_count"],
    }
    if conn.execute(sql.UPDATE_CACHED_SERIES, {**guard, **changes}).rowcount != 1:
        raise _StaleSeriesError


def _deadline(series: SeriesRow, policy: PolicyLookup) -> Deadline:
    return completion_deadline(
        policy(series.modality),
        series.version_started_at,
        series.last_arrival_at,
        series.released_at,
    )
