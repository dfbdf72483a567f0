"""The audit trail: its own table on the node's database, readable through /api/audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from dicomnode.admin import AuditLog
from dicomnode.node import Node
from dicomnode.store.database import Database

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_entries_are_kept_newest_first_and_filtered(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    # What the CLI does for `dicomnode retry`: its own AuditLog on the same database.
    cli_audit = AuditLog(node.database)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = cli_audit.record(at, "root (cli)", "job.retry", "send-3", {"previous_state": "failed"})
    second = cli_audit.record(
        at + timedelta(seconds=1), "alice", "rules.save", "ct.yaml", {"version": "ab"}
    )
    entries = client.get("/api/audit").json()
    assert [e["id"] for e in entries] == [second, first]
    assert entries[1] == {
        "id": first,
        "at": "2026-01-02T03:04:05Z",
        "actor": "root (cli)",
        "action": "job.retry",
        "target": "send-3",
        "detail": {"previous_state": "failed"},
    }
    assert [e["id"] for e in client.get("/api/audit", params={"actor": "alice"}).json()] == [second]
    assert [e["id"] for e in client.get("/api/audit", params={"target": "send-3"}).json()] == [
        first
    ]
    assert client.get("/api/audit", params={"action": "nothing"}).json() == []
    assert len(client.get("/api/audit", params={"limit": 1}).json()) == 1
    assert client.get("/api/audit", params={"limit": 0}).status_code == 422


def test_the_table_is_created_on_first_use_beside_the_index(database_url: str) -> None:
    database = Database(database_url)
    try:
        audit = AuditLog(database)
        assert audit.entries() == []
        assert "audit_log" in inspect(database.engine).get_table_names()
    finally:
        database.close()


def test_a_long_actor_header_is_cut_and_stripped_of_control_characters(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    response = client.put(
        "/api/rules",
        json={"name": "empty.yaml", "content": "[]\n"},
        headers={"X-Actor": "  bob\t" + "x" * 300},
    )
    assert response.status_code == 200, response.text
    (entry,) = client.get("/api/audit").json()
    assert entry["actor"] == "bob" + "x" * 125
