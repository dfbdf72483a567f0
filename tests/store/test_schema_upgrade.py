"""An index made by an earlier version gains the columns added since, and keeps its rows.

The schema is made with ``create_all``, which adds missing tables but never columns: an
upgraded node would have failed on its first query of a column added since (issue 11
added routing-failure, job-backoff and rejection columns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.presentation import build_context
from structlog.testing import capture_logs

from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Columns the index of e23735d lacked, by table.
ADDED_SINCE = {
    "series": ["rejected_count"],
    "series_completions": ["failures", "error", "next_attempt_at", "failed_at"],
    "jobs": ["failures", "next_attempt_at"],
}


def store(port: int, dataset: Dataset) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.requested_contexts = [build_context(CT, EXPLICIT_LE)]
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


def test_an_older_index_gains_the_new_columns_and_keeps_its_rows(
    node_factory: Callable[..., Node],
) -> None:
    first, second = ct_phantom_datasets(CTPhantomSpec(slices=2, rows=16, columns=16))
    node = node_factory()
    assert store(node.scp.port, first) == 0
    database_path = Path(node.config.database_url.removeprefix("sqlite:///"))
    node.stop()
    with sqlite3.connect(database_path) as connection:  # the older version's index
        for table, columns in ADDED_SINCE.items():
            for column in columns:
                connection.execute(f"ALTER TABLE {table} DROP COLUMN {column}")

    with capture_logs() as events:
        upgraded = node_factory()
    added = {(e["table"], e["column"]) for e in events if e["event"] == "index_column_added"}
    assert added == {(t, c) for t, columns in ADDED_SINCE.items() for c in columns}
    (series,) = upgraded.index.list_series()
    assert series.instance_count == 1
    assert series.rejected_count == 0
    assert store(upgraded.scp.port, second) == 0
    assert upgraded.index.count_instances() == 2
