"""Alembic's entry: migrate the connection the node hands over, or a developer's URL.

The node passes its connection (already in a transaction, holding the schema lock) as
``config.attributes["connection"]``; ``alembic -x url=...`` is for writing a revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dicomnode.store.tables import Base


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters most things by copying the table
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _migrate(connection)
        return
    engine = create_engine(context.get_x_argument(as_dictionary=True)["url"])
    with engine.begin() as owned:
        _migrate(owned)
    engine.dispose()


_run()
