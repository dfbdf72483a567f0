"""The audit trail: every change made through the API or the CLI, with when and who.

Kept in its own table, created here on the node's database (the index schema belongs to
the store and does not know about it). Entries are only ever added.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, MetaData, String, Table, insert, select

from dicomnode.store.database import Database
from dicomnode.store.tables import BigInt, UTCDateTime

_metadata = MetaData()

audit_table = Table(
    "audit_log",
    _metadata,
    Column("id", BigInt, primary_key=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),  # e.g. rules.save, job.retry
    Column("target", String(256), nullable=False),  # e.g. ct.yaml, send-7
    Column("detail", JSON, nullable=False),
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditLog:
    """Append and read audit entries; the table is created on first use."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._opened = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the table where missing (idempotent)."""
        with self._lock:
            if not self._opened:
                _metadata.create_all(self._db.engine)
                self._opened = True

    def record(
        self, at: datetime, actor: str, action: str, target: str, detail: dict[str, Any]
    ) -> int:
        """Append an entry; returns its id."""
        self.open()
        with self._db.writing() as session:
            result = session.execute(
                insert(audit_table).values(
                    at=at, actor=actor[:128], action=action, target=target[:256], detail=detail
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]  # CursorResult

    def entries(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first."""
        self.open()
        query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(audit_table.c.action == action)
        if actor is not None:
            query = query.where(audit_table.c.actor == actor)
        if target is not None:
            query = query.where(audit_table.c.target == target)
        with self._db.reading() as session:
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.target, dict(r.detail))
                for r in session.execute(query)
            ]
