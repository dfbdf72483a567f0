"""The index schema's version: made at this code's revision, or migrated up to it, at start.

Alembic keeps the revision in ``alembic_version``. An index without it was made by a
release before Alembic (e23735d's schema, revision 0001) and is stamped so before it is
migrated. The caller holds the schema lock and the transaction: on PostgreSQL a failed
migration leaves the index as it was.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from dicomnode.errors import StorageError
from dicomnode.logs import get_logger
from dicomnode.store.tables import Base

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The revision of an index made before Alembic: release e23735d's tables.
BEFORE_ALEMBIC = "0001"


def migrations_config(connection: Connection) -> Config:
    """Alembic's configuration, without an ini file, migrating ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:
        raise StorageError("the index migrations have no head revision")
    return head


def bring_to_head(connection: Connection) -> None:
    """Create the schema in an empty database, or migrate an older one to this code's."""
    config = migrations_config(connection)
    head = head_revision()
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None and not inspect(connection).has_table("series"):
        Base.metadata.create_all(connection)
        command.stamp(config, head)
        log.info("index_created", revision=head)
        return
    if current is None:
        command.stamp(config, BEFORE_ALEMBIC)
        current = BEFORE_ALEMBIC
    _check_known(current)
    if current == head:
        return
    command.upgrade(config, head)
    log.warning("index_migrated", from_revision=current, to_revision=head)


def _check_known(revision: str) -> None:
    try:
        ScriptDirectory(str(MIGRATIONS)).get_revision(revision)
    except CommandError as exc:
        raise StorageError(
            f"the index is at revision {revision!r}, which this version of dicomnode does"
            " not know: it was migrated by a newer version; run that one, or restore the"
            " backup taken before the upgrade"
        ) from exc
