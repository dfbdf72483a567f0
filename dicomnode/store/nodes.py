"""The nodes of a cluster: each process says who it is and that it is alive.

A node writes its row in ``nodes`` at start (id, host, process, version, roles) and its
heartbeat every third of its lease, in the same transaction that renews every lease it
holds (:mod:`dicomnode.store.claims`): a node whose heartbeat stopped holds nothing for
long. On a clean stop it gives its claims back and writes ``stopped_at``. The admin API
lists the rows (``/api/cluster``); a node whose heartbeat is older than its lease is
shown as lost.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode import __version__
from dicomnode.store.claims import Lease, held, renew
from dicomnode.store.database import Database
from dicomnode.store.tables import NodeRow

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as the cluster view shows it."""

    id: str
    host: str
    pid: int
    version: str
    roles: tuple[str, ...]
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    state: str  # up | lost | stopped
    leases: dict[str, int]  # units of work it holds now, by kind


class Membership:
    """This node's row in ``nodes`` and its heartbeat."""

    def __init__(
        self, database: Database, lease: Lease, roles: Sequence[str], clock: Clock
    ) -> None:
        self._db = database
        self.lease = lease
        self._roles = list(roles)
        self._clock = clock

    @property
    def beat_seconds(self) -> float:
        """How often to beat: three beats per lease, so one late beat loses nothing."""
        return self.lease.seconds / 3

    def join(self) -> None:
        """Write (or rewrite, after a restart) this node's row."""
        now = self._clock()
        with self._db.writing() as session:
            row = session.get(NodeRow, self.lease.owner, with_for_update=True)
            if row is None:
                row = NodeRow(id=self.lease.owner)
                session.add(row)
            row.host, row.pid, row.version = socket.gethostname(), os.getpid(), __version__
            row.roles = {"roles": self._roles}
            row.started_at = row.heartbeat_at = now
            row.stopped_at = None

    def beat(self) -> int:
        """The heartbeat: renew every lease this node holds; returns how many."""
        now = self._clock()
        with self._db.writing() as session:
            session.execute(
                NodeRow.__table__.update()  # type: ignore[attr-defined]  # a Table
                .where(NodeRow.id == self.lease.owner)
                .values(heartbeat_at=now)
            )
            return renew(session, self.lease, now)

    def leave(self) -> None:
        """A clean stop: the row says so (the stages gave their claims back)."""
        with self._db.writing() as session:
            row = session.get(NodeRow, self.lease.owner)
            if row is not None:
                row.stopped_at = self._clock()


def cluster(database: Database, now: datetime, lease_seconds: float) -> list[NodeStatus]:
    """Every node that ever joined, newest heartbeat first, with what it holds now."""
    with database.reading() as session:
        rows = session.scalars(select(NodeRow).order_by(NodeRow.heartbeat_at.desc())).all()
        return [_status(session, row, now, lease_seconds) for row in rows]


def _status(session: Session, row: NodeRow, now: datetime, lease_seconds: float) -> NodeStatus:
    if row.stopped_at is not None:
        state = "stopped"
    elif (now - row.heartbeat_at).total_seconds() > lease_seconds:
        state = "lost"
    else:
        state = "up"
    return NodeStatus(
        id=row.id,
        host=row.host,
        pid=row.pid,
        version=row.version,
        roles=tuple(row.roles.get("roles", ())),
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        state=state,
        leases=held(session, row.id),
    )
