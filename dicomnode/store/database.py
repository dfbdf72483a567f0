"""One database for every store: the engine, sessions and the single write lock.

Writes go through one lock: SQLite has a single writer, and serialising here avoids its
lock-upgrade deadlocks between threads. PostgreSQL would not need it, and loses little.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from dicomnode.errors import StorageError
from dicomnode.store.schema import bring_to_head

# The key of the PostgreSQL advisory lock that serialises schema creation between nodes
# (any fixed 64-bit number that no other application on the database uses).
_SCHEMA_LOCK = 0x64C0_4E0D_E5C4_E3A0


class Database:
    """The index database shared by the index, the routing log and the outbox."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()
        self._writer: Connection | None = None  # writing_core's, kept between writes

    def create_schema(self) -> None:
        """Create the schema in an empty database, or migrate an older one (idempotent).

        Processes starting together on one database take turns, each holding a lock
        while it looks and creates or migrates (DDL is transactional in both), so the
        later ones find the first's tables at this code's revision instead of failing on
        "already exists" or migrating twice (PostgreSQL: a transaction-scoped advisory
        lock; SQLite: its write lock, taken up front). See dicomnode.store.schema.
        """
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
            elif connection.dialect.name == "sqlite":
                # pysqlite leaves DDL outside any transaction unless one is begun by hand.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            bring_to_head(connection)

    def close(self) -> None:
        with self._write_lock:
            self._drop_writer()
        self.engine.dispose()

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that commits on success; failures become StorageError."""
        with self._write_lock, self._sessions() as session:
            try:
                with session.begin():
                    yield session
            except SQLAlchemyError as exc:
                raise StorageError(f"database write failed: {type(exc).__name__}") from exc

    @contextmanager
    def writing_core(self) -> Iterator[Connection]:
        """As ``writing``, with a plain Core connection instead of an ORM session.

        For the per-instance index write: an ORM ``Session`` and its transaction objects
        cost ~10 % of the node's Python time on small instances, for statements that
        are Core already. The same lock, the same one transaction, committed on return.
        The connection is kept between writes (taking one from the pool and giving it
        back was ~5 % more); one that failed is closed and replaced on the next write, so
        a database server that restarted costs one failed write, as with the pool.
        """
        with self._write_lock:
            connection = self._writer
            try:
                if connection is None or connection.closed:
                    connection = self._writer = self.engine.connect()
                with connection.begin():
                    yield connection
            except SQLAlchemyError as exc:
                self._drop_writer()
                raise StorageError(f"database write failed: {type(exc).__name__}") from exc
            # Any other exception: the transaction was rolled back, the connection is good.

    def _drop_writer(self) -> None:
        connection, self._writer = self._writer, None
        if connection is not None:
            with suppress(SQLAlchemyError):
                connection.invalidate()
                connection.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # WAL lets readers run beside the writer; FULL syncs the WAL on every commit,
        # which is what makes an acknowledgement durable.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
