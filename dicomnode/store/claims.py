"""Claims of work with leases, so several nodes on one database share it safely.

Every unit of work a node takes (a completed series to route, a pipeline job, a send)
is claimed in one transaction: the row is picked with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (another node's pick of the same row skips it instead of waiting) and marked
with the node's id (``owner``) and ``lease_until``. The node's heartbeat renews every
lease it holds; a node that dies stops renewing, and another takes the work over only
after the lease expired. Whatever ends a unit (done, failed, retry later) is written
only while the node still owns it: a node that stalled past its lease and lost the work
to another writes nothing over the other's result.

On SQLite one node owns the database (the storage lock) and its write lock serialises
claims; ``FOR UPDATE`` is left out of SQLite's SQL and leases change nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from dicomnode.store.tables import CompletionRow, JobRow, SendRow


@dataclass(frozen=True, slots=True)
class Lease:
    """Who claims work here, and for how long a claim holds without renewal."""

    owner: str
    seconds: float = 30.0

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


# The lease of queues used outside a running node (the CLI, tests): one owner.
LOCAL = Lease("local")


class LeaseLostError(Exception):
    """The node's lease on a unit of work expired and another node took the work over."""


def free_or_expired(
    owner: InstrumentedAttribute[str | None],
    lease_until: InstrumentedAttribute[datetime | None],
    now: datetime,
) -> ColumnElement[bool]:
    """Nobody holds the row, or its holder's lease has run out (a dead node's work)."""
    return or_(owner.is_(None), lease_until.is_(None), lease_until < now)


def taken_over(
    state: InstrumentedAttribute[str],
    working: str,
    owner: InstrumentedAttribute[str | None],
    lease_until: InstrumentedAttribute[datetime | None],
    now: datetime,
) -> ColumnElement[bool]:
    """A row left in its ``working`` state by a node whose lease expired."""
    return and_(state == working, free_or_expired(owner, lease_until, now))


def renew(session: Session, lease: Lease, now: datetime) -> int:
    """Push out every lease ``lease.owner`` holds (the heartbeat); returns how many."""
    until = lease.until(now)
    renewed = 0
    for statement in (
        update(SendRow).where(SendRow.owner == lease.owner, SendRow.state == "sending"),
        update(JobRow).where(JobRow.owner == lease.owner, JobRow.state == "running"),
        update(CompletionRow).where(
            CompletionRow.owner == lease.owner,
            CompletionRow.consumed_at.is_(None),
            CompletionRow.lease_until.is_not(None),
        ),
    ):
        result = session.execute(statement.values(lease_until=until))
        renewed += int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it
    return renewed


def held(session: Session, owner: str) -> dict[str, int]:
    """How many units of work ``owner`` holds now, by kind (for the cluster view)."""
    counts = {
        "sends": select(func.count(SendRow.id)).where(
            SendRow.owner == owner, SendRow.state == "sending"
        ),
        "jobs": select(func.count(JobRow.id)).where(
            JobRow.owner == owner, JobRow.state == "running"
        ),
        "routing": select(func.count(CompletionRow.id)).where(
            CompletionRow.owner == owner,
            CompletionRow.consumed_at.is_(None),
            CompletionRow.lease_until.is_not(None),
        ),
    }
    return {kind: int(session.scalar(query) or 0) for kind, query in counts.items()}
