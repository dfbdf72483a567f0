"""Nodes started together on an empty database all create, or find, the same schema.

Each looks for the tables and creates the missing ones; without taking turns, the
second one's CREATE TABLE fails on PostgreSQL with a unique-key error in the catalogue
(``pg_type_typname_nsp_index``) and that node dies at start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect

from dicomnode.store.database import Database
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


def test_databases_creating_the_schema_at_once_all_succeed(database_url: str) -> None:
    databases = [Database(database_url) for _ in range(STARTERS)]
    try:
        for database in databases:  # each connects first, so they meet at the DDL
            database.engine.connect().close()
        pending = list(databases)
        _together(STARTERS, lambda: pending.pop().create_schema())
        tables = set(inspect(databases[0].engine).get_table_names())
    finally:
        for database in databases:
            database.close()
    assert tables >= set(Base.metadata.tables)


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
