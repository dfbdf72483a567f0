"""An index made by an earlier version gains the columns added since, and keeps its rows.

The schema is made with ``create_all``, which adds missing tables but never columns: an
upgraded node would have failed on its first query of a column added since (issue 11
added routing-failure, job-backoff and rejection columns).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom

# Columns the index of e23735d lacked, by table.
ADDED_SINCE = {
    "series": ["rejected_count"],
    "series_completions": ["failures", "error", "next_attempt_at", "failed_at"],
    "jobs": ["failures", "next_attempt_at"],
}


# On every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def stored(port: int, path: Path) -> bool:
    """Whether the node acknowledged ``path``, sent with the node's own sender."""
    sendable = inspect_file(path)
    assert isinstance(sendable, SendableFile)
    (result,) = send_files([sendable], parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    return result.ok


def test_an_older_index_gains_the_new_columns_and_keeps_its_rows(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    first, second = series.paths
    node = node_factory()
    assert stored(node.scp.port, first)
    node.stop()
    older = create_engine(node.config.database_url)  # to make the older version's index
    with older.begin() as connection:
        for table, columns in ADDED_SINCE.items():
            for column in columns:
                connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    older.dispose()

    with capture_logs() as events:
        upgraded = node_factory()
    added = {(e["table"], e["column"]) for e in events if e["event"] == "index_column_added"}
    assert added == {(t, c) for t, columns in ADDED_SINCE.items() for c in columns}
    (series,) = upgraded.index.list_series()
    assert series.instance_count == 1
    assert series.rejected_count == 0
    assert stored(upgraded.scp.port, second)
    assert upgraded.index.count_instances() == 2
