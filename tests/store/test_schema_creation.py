"""Nodes started together on an empty database all create, or find, the same schema.

Each looks for the tables and creates the missing ones; without taking turns, the
second one's CREATE TABLE fails on PostgreSQL with a unique-key error in the catalogue
(``pg_type_typname_nsp_index``) and that node dies at start. On an older index, only
the first migrates it; the others find it at this code's revision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import tables_e23735d
from sqlalchemy import create_engine, inspect
from structlog.testing import capture_logs

from dicomnode.store.database import Database
from dicomnode.store.schema import head_revision
from dicomnode.store.tables import Base
from dicomnode.testing.node import NodeProcess

STARTERS = 3


def _together(count: int, work: Callable[[], object]) -> None:
    """Run ``work`` on ``count`` threads released at the same moment; re-raise any error."""
    barrier = threading.Barrier(count)

    def run() -> object:
        barrier.wait(timeout=30)
        return work()

    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(run) for _ in range(count)]:
            future.result(timeout=60)


def _create_schema_at_once(url: str) -> set[str]:
    """``create_schema`` on ``STARTERS`` databases at the same moment; the tables after."""
    databases = [Database(url) for _ in range(STARTERS)]
    try:
        for database in databases:  # each connects first, so they meet at the DDL
            database.engine.connect().close()
        pending = list(databases)
        _together(STARTERS, lambda: pending.pop().create_schema())
        return set(inspect(databases[0].engine).get_table_names())
    finally:
        for database in databases:
            database.close()


def test_databases_creating_the_schema_at_once_all_succeed(database_url: str) -> None:
    with capture_logs() as events:
        tables = _create_schema_at_once(database_url)
    assert tables >= set(Base.metadata.tables)
    assert [e["revision"] for e in events if e["event"] == "index_created"] == [head_revision()]


def test_databases_starting_at_once_on_an_older_index_migrate_it_once(database_url: str) -> None:
    older = create_engine(database_url)
    tables_e23735d.Base.metadata.create_all(older)  # as release e23735d made it
    older.dispose()
    with capture_logs() as events:
        tables = _create_schema_at_once(database_url)
    assert tables >= set(Base.metadata.tables)
    migrated = [
        (e["from_revision"], e["to_revision"]) for e in events if e["event"] == "index_migrated"
    ]
    assert migrated == [("0001", head_revision())]


# SQLite is one node's own file: only a server database is shared by nodes.
@pytest.mark.parametrize(
    "database_url", ["postgresql+psycopg", "postgresql+psycopg2"], indirect=True
)
def test_nodes_started_at_once_on_an_empty_postgresql_database_all_come_up(
    node_process: Callable[..., NodeProcess], database_url: str
) -> None:
    nodes = [node_process(database={"url": database_url}) for _ in range(STARTERS)]
    pending = list(nodes)
    _together(STARTERS, lambda: pending.pop().start())
    assert all(node.process.popen.poll() is None for node in nodes)
