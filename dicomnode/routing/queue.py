"""The routing queue: completed series versions waiting to be routed, and their failures.

Each entry of the durable completion queue is one unit of routing work. An entry whose
routing raises is put back with a delay that doubles at each failure, so it never holds
back the entries behind it; after ``RoutingRetry.attempts`` failures it is failed for
good, with its reason, until an operator retries it.

In a cluster the nodes' routers share the queue: each claims a batch of entries with a
lease (:mod:`dicomnode.store.claims`), and one a dead node claimed is routed by another
once the lease expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update

from dicomnode.store.claims import LOCAL, Lease, free_or_expired
from dicomnode.store.database import Database
from dicomnode.store.notify import ROUTE, notify
from dicomnode.store.tables import CompletionRow, SeriesRow

_REASON_CHARS = 1024  # CompletionRow.error's length


@dataclass(frozen=True, slots=True)
class RoutingRetry:
    """How often, and how far apart, a failing series version is routed again."""

    attempts: int = 5
    first_delay: timedelta = timedelta(seconds=15)
    max_delay: timedelta = timedelta(minutes=10)

    def delay(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failure (1, 2, ...): 15 s, 30 s, 60 s ..."""
        doubled: timedelta = self.first_delay * 2 ** max(0, failures - 1)
        return min(doubled, self.max_delay)


DEFAULT_RETRY = RoutingRetry()


@dataclass(frozen=True, slots=True)
class RoutingEntry:
    """One completed series version to route."""

    id: int
    series_id: int
    version: int
    failures: int


@dataclass(frozen=True, slots=True)
class RoutingFailure:
    """A series version whose routing failed: retrying, or failed for good."""

    entry_id: int
    series_id: int
    series_uid: str
    version: int
    state: str  # retrying | failed
    failures: int
    error: str
    completed_at: datetime
    next_attempt_at: datetime | None
    failed_at: datetime | None


@dataclass(frozen=True, slots=True)
class RoutingStatus:
    """How routing stands for a series' latest completed version."""

    state: str  # routed | waiting | retrying | failed
    error: str | None  # the last failure's reason (kept after a later success)
    failures: int


@dataclass(frozen=True, slots=True)
class Reroute:
    """What asking to route a series again did: the entry queued, or why not."""

    entry_id: int | None
    version: int | None
    refused: str | None  # the reason nothing was queued


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording a failure decided."""

    permanent: bool
    next_attempt_at: datetime | None


class RoutingQueue:
    """Database operations of the routing queue (the router is its only consumer)."""

    def __init__(
        self, database: Database, retry: RoutingRetry = DEFAULT_RETRY, lease: Lease = LOCAL
    ) -> None:
        self._db = database
        self.retry_policy = retry
        self.lease = lease

    @staticmethod
    def _due(now: datetime) -> ColumnElement[bool]:
        """Not routed, not failed, not backing off, and no live node's claim on it."""
        return and_(
            CompletionRow.consumed_at.is_(None),
            CompletionRow.failed_at.is_(None),
            or_(CompletionRow.next_attempt_at.is_(None), CompletionRow.next_attempt_at <= now),
            free_or_expired(CompletionRow.owner, CompletionRow.lease_until, now),
        )

    def due(self, now: datetime) -> list[RoutingEntry]:
        """Entries to route now, oldest first (read only: ``claim_due`` takes them)."""
        with self._db.reading() as session:
            rows = session.execute(
                select(
                    CompletionRow.id,
                    CompletionRow.series_id,
                    CompletionRow.version,
                    CompletionRow.failures,
                )
                .where(self._due(now))
                .order_by(CompletionRow.id)
            )
            return [RoutingEntry(a, b, c, d or 0) for a, b, c, d in rows]

    def claim_due(self, now: datetime, limit: int = 50) -> list[RoutingEntry]:
        """Claim up to ``limit`` due entries for this node, oldest first.

        ``FOR UPDATE SKIP LOCKED``: routers claiming at once each get other entries.
        """
        with self._db.writing() as session:
            rows = session.scalars(
                select(CompletionRow)
                .where(self._due(now))
                .order_by(CompletionRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            until = self.lease.until(now)
            for row in rows:
                row.owner, row.lease_until = self.lease.owner, until
            return [RoutingEntry(r.id, r.series_id, r.version, r.failures or 0) for r in rows]

    def release_own(self) -> int:
        """At start: give back the entries this node's previous run had claimed."""
        with self._db.writing() as session:
            result = session.execute(
                update(CompletionRow)
                .where(CompletionRow.owner == self.lease.owner, CompletionRow.consumed_at.is_(None))
                .values(owner=None, lease_until=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it

    def fail(self, entry: RoutingEntry, reason: str, now: datetime) -> Outcome:
        """Record a failed attempt: back off, or give up after the last attempt."""
        failures = entry.failures + 1
        permanent = failures >= self.retry_policy.attempts
        next_at = None if permanent else now + self.retry_policy.delay(failures)
        with self._db.writing() as session:
            session.execute(
                update(CompletionRow)
                .where(CompletionRow.id == entry.id, CompletionRow.consumed_at.is_(None))
                .values(
                    failures=failures,
                    error=reason[:_REASON_CHARS],
                    next_attempt_at=next_at,
                    failed_at=now if permanent else None,
                    owner=None,
                    lease_until=None,
                )
            )
        return Outcome(permanent, next_at)

    def retry(self, series_id: int) -> int:
        """Route the series' failed versions again now (an operator's retry); how many."""
        return self._retry(CompletionRow.series_id == series_id)

    def retry_entry(self, entry_id: int) -> int:
        """Route one failed entry (``route-N`` in ``dicomnode jobs``) again now; 1 or 0."""
        return self._retry(CompletionRow.id == entry_id)

    def _retry(self, which: ColumnElement[bool]) -> int:
        with self._db.writing() as session:
            result = session.execute(
                update(CompletionRow)
                .where(
                    which,
                    CompletionRow.consumed_at.is_(None),
                    or_(
                        CompletionRow.failed_at.is_not(None),
                        CompletionRow.next_attempt_at.is_not(None),
                    ),
                )
                # ``failures`` is kept (it feeds a counter): a retry that fails again is
                # failed for good at once, until the next operator retry.
                .values(failed_at=None, next_attempt_at=None, owner=None, lease_until=None)
            )
            notify(session, ROUTE)
            return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it

    def reroute(self, series_id: int, actor: str, now: datetime) -> Reroute:
        """Queue the series' latest completed version to be routed again by the rules in
        force (an operator's re-route, docs/routing.md); refused with a reason where the
        series is still receiving or its latest version's routing is not done yet.

        The series row is locked, so two operators re-routing at once queue it once.
        """
        with self._db.writing() as session:
            series = session.scalar(
                select(SeriesRow).where(SeriesRow.id == series_id).with_for_update()
            )
            if series is None:
                return Reroute(None, None, "no such series")
            if series.state != "complete":
                return Reroute(None, None, "it is still receiving: it is routed when it completes")
            latest = session.scalar(
                select(CompletionRow)
                .where(CompletionRow.series_id == series_id)
                .order_by(CompletionRow.id.desc())
                .limit(1)
            )
            if latest is None:
                return Reroute(None, None, "no version of it has completed")
            if latest.consumed_at is None:
                return Reroute(None, latest.version, _not_routed_yet(latest))
            row = CompletionRow(
                series_id=series_id,
                version=latest.version,
                instance_count=latest.instance_count,
                reason="reroute",
                completed_at=now,
                rerouted_by=actor[:128],
            )
            session.add(row)
            session.flush()
            notify(session, ROUTE)
            return Reroute(row.id, latest.version, None)

    def failures(self, limit: int = 200) -> list[RoutingFailure]:
        """Series versions not routed because routing failed, newest first."""
        with self._db.reading() as session:
            rows = session.execute(
                select(CompletionRow, SeriesRow.series_uid)
                .join(SeriesRow, SeriesRow.id == CompletionRow.series_id)
                .where(CompletionRow.consumed_at.is_(None), CompletionRow.failures > 0)
                .order_by(CompletionRow.id.desc())
                .limit(limit)
            )
            return [_failure(row, uid) for row, uid in rows]

    def failure_of(self, entry_id: int) -> RoutingFailure | None:
        with self._db.reading() as session:
            found = session.execute(
                select(CompletionRow, SeriesRow.series_uid)
                .join(SeriesRow, SeriesRow.id == CompletionRow.series_id)
                .where(CompletionRow.id == entry_id)
            ).first()
            if found is None or found[0].consumed_at is not None or not found[0].failures:
                return None
            return _failure(found[0], found[1])

    def statuses(self, series_ids: list[int]) -> dict[int, RoutingStatus]:
        """Each series' latest completed version's routing (absent: none completed)."""
        if not series_ids:
            return {}
        latest = (
            select(func.max(CompletionRow.id))
            .where(CompletionRow.series_id.in_(series_ids))
            .group_by(CompletionRow.series_id)
        )
        with self._db.reading() as session:
            rows = session.scalars(select(CompletionRow).where(CompletionRow.id.in_(latest)))
            return {
                row.series_id: RoutingStatus(
                    routing_state(row) or "waiting", row.error, row.failures or 0
                )
                for row in rows
            }


def routing_state(row: CompletionRow | None) -> str | None:
    """How routing stands for a completion entry: routed, waiting, retrying or failed."""
    if row is None:
        return None
    if row.consumed_at is not None:
        return "routed"
    if row.failed_at is not None:
        return "failed"
    return "retrying" if row.failures else "waiting"


def _not_routed_yet(row: CompletionRow) -> str:
    state = routing_state(row)
    if state == "failed":
        return (
            f"routing of version {row.version} failed: retry it with "
            f"'dicomnode retry route-{row.id}'"
        )
    if state == "retrying":
        return f"routing of version {row.version} failed and is retried by the node"
    return f"version {row.version} is waiting to be routed"


def _failure(row: CompletionRow, series_uid: str) -> RoutingFailure:
    return RoutingFailure(
        entry_id=row.id,
        series_id=row.series_id,
        series_uid=series_uid,
        version=row.version,
        state="failed" if row.failed_at is not None else "retrying",
        failures=row.failures,
        error=row.error or "",
        completed_at=row.completed_at,
        next_attempt_at=row.next_attempt_at,
        failed_at=row.failed_at,
    )
