"""The index schema is versioned with Alembic: made at this code's revision, or migrated.

An index made by release e23735d (the last before Alembic, ``tables_e23735d``) is stamped
at its revision and migrated at start, once, and keeps its rows; the migrated index must
match the tables exactly, so a column added to tables.py without a migration fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tables_e23735d
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, text
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import StorageError
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.database import Database
from dicomnode.store.schema import head_revision
from dicomnode.store.tables import Base

# On every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

OLD_SERIES_UID = "1.2.826.0.1.3680043.8.498.1"


def make_e23735d_index(url: str) -> None:
    """An index as release e23735d's node made it, holding one complete series."""
    engine = create_engine(url)
    tables_e23735d.Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.add(
            tables_e23735d.SeriesRow(
                study_uid="1.2.826.0.1.3680043.8.498.2",
                series_uid=OLD_SERIES_UID,
                modality="CT",
                attributes={"Modality": ["CT"]},
                instance_count=3,
                first_arrival_at=now,
                last_arrival_at=now,
                version=1,
                version_started_at=now,
                state="complete",
                completed_at=now,
            )
        )
    engine.dispose()


def revision_and_differences(url: str, metadata: MetaData = Base.metadata) -> tuple[Any, ...]:
    """The index's Alembic revision, and how its schema differs from ``metadata``."""
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        found = context.get_current_revision(), compare_metadata(context, metadata)
    engine.dispose()
    return found


def create_schema(url: str) -> list[dict[str, Any]]:
    """``Database.create_schema`` on ``url``; the events it logged."""
    database = Database(url)
    try:
        with capture_logs() as events:
            database.create_schema()
    finally:
        database.close()
    return events


def stored(port: int, path: Path) -> bool:
    """Whether the node acknowledged ``path``, sent with the node's own sender."""
    sendable = inspect_file(path)
    assert isinstance(sendable, SendableFile)
    (result,) = send_files([sendable], parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    return result.ok


def test_an_empty_database_is_made_at_this_codes_revision(database_url: str) -> None:
    events = create_schema(database_url)
    assert [e["event"] for e in events if e["event"].startswith("index_")] == ["index_created"]
    assert revision_and_differences(database_url) == (head_revision(), [])


def test_an_e23735d_index_is_migrated_once_and_keeps_its_rows(
    node_factory: Callable[..., Node], database_url: str, tmp_path: Path
) -> None:
    make_e23735d_index(database_url)
    with capture_logs() as events:
        node = node_factory()
    migrated = [e for e in events if e["event"] == "index_migrated"]
    assert [(e["from_revision"], e["to_revision"]) for e in migrated] == [("0001", head_revision())]
    (old,) = node.index.list_series()
    assert (old.series_uid, old.instance_count, old.rejected_count) == (OLD_SERIES_UID, 3, 0)
    phantom = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=1, rows=16, columns=16))
    assert stored(node.scp.port, phantom.paths[0])
    assert node.index.count_instances() == 1
    node.stop()

    with capture_logs() as events:
        again = node_factory()  # a migrated index is at this code's revision: no-op
    assert not [e for e in events if e["event"] in ("index_migrated", "index_created")]
    assert len(again.index.list_series()) == 2
    assert revision_and_differences(database_url) == (head_revision(), [])


def test_the_comparison_finds_a_column_added_without_a_migration(database_url: str) -> None:
    create_schema(database_url)
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["series"].append_column(Column("added_later", Integer))
    _, differences = revision_and_differences(database_url, metadata)
    assert [(d[0], d[2], d[3].name) for d in differences] == [
        ("add_column", "series", "added_later")
    ]


def test_an_index_newer_than_this_code_is_refused(database_url: str) -> None:
    create_schema(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    engine.dispose()
    with pytest.raises(StorageError, match="'f00dfeed'"):
        create_schema(database_url)
