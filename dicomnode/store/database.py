"""One database for every store: the engine, sessions and the single write lock.

Writes go through one lock: SQLite has a single writer, and serialising here avoids its
lock-upgrade deadlocks between threads. PostgreSQL would not need it, and loses little.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from dicomnode.errors import StorageError
from dicomnode.logs import get_logger
from dicomnode.store.tables import Base

log = get_logger(__name__)

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
        """Create missing tables and add missing columns (idempotent).

        An index made by an earlier version lacks the columns added since: without them
        the node would fail on its first query after an upgrade. Each added column is
        nullable or has a scalar default, so the rows already there read as before.

        Processes starting together on one database take turns, each holding a lock
        while it looks and creates (DDL is transactional in both), so the later ones see
        the first's tables instead of failing on "already exists" (PostgreSQL: a
        transaction-scoped advisory lock; SQLite: its write lock, taken up front).
        """
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
            elif connection.dialect.name == "sqlite":
                # pysqlite leaves DDL outside any transaction unless one is begun by hand.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            Base.metadata.create_all(connection)
            _add_missing_columns(connection)

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


def _add_missing_columns(connection: Connection) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each column the tables define and the index lacks."""
    inspector = inspect(connection)
    present_tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in present_tables:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
            ddl += column.type.compile(connection.dialect)
            default = column.default
            if isinstance(default, ScalarElementColumnDefault) and default.arg is not None:
                ddl += "" if column.nullable else " NOT NULL"
                ddl += f" DEFAULT {_literal(default.arg)}"
            elif not column.nullable:
                raise StorageError(
                    f"the index lacks {table.name}.{column.name}, which has no default"
                )
            connection.execute(text(ddl))
            log.warning("index_column_added", table=table.name, column=column.name)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


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
