"""Index pruning: the rows of a series go ``storage.index_retention_days`` after its files.

Retention runs here with a clock set months ahead instead of waiting: the node's own
``Retention`` for the files, then one with the same database and a later clock for rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from test_retention_and_disk import destination, send, write_good_and_bad_rules

from dicomnode.admin.audit import AuditLog
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.completion import utc_now
from dicomnode.store.retention import Retention
from dicomnode.store.tables import (
    AssociationRow,
    CompletionRow,
    InstanceRow,
    RoutingDecisionRow,
    SendAttemptRow,
    SendItemRow,
    SendRow,
    SeriesRow,
)
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.process import poll_until

TABLES = (
    SeriesRow,
    InstanceRow,
    CompletionRow,
    RoutingDecisionRow,
    SendRow,
    SendItemRow,
    SendAttemptRow,
)


def counts(node: Node) -> dict[str, int]:
    with node.database.reading() as session:
        return {
            t.__tablename__: int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in (*TABLES, AssociationRow)
        }


@pytest.mark.usefixtures("database_url")  # every index backend
def test_the_rows_of_a_series_purged_long_ago_go_and_the_audit_log_stays(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_good_and_bad_rules(tmp_path)
    good = write_ct_phantom(
        tmp_path / "good", CTPhantomSpec(slices=3, rows=16, columns=16, series_description="GOOD")
    )
    bad = write_ct_phantom(
        tmp_path / "bad",
        CTPhantomSpec(slices=2, rows=16, columns=16, seed=2, series_description="BAD"),
    )
    with StoreSCP(ae_title="ARCHIVE") as archive:
        node = node_factory(
            destinations={
                "archive": destination("ARCHIVE", archive.port),
                "gone": destination("GONE", refusing_port(), max_age_seconds=1),
            },
        )
        assert node.retention._index_retention == timedelta(days=90)  # the default
        send(good.paths + bad.paths, node.scp.port)
        poll_until(
            lambda: sorted(s.state for s in node.outbox.queue.list_sends()) == ["done", "failed"],
            timeout=60,
            what="one send done and one failed",
        )
    audit = AuditLog(node.database)
    audit.record(utc_now(), "admin (cli)", "job.retry", "send-1", {})
    before = counts(node)

    def at(days: float) -> Retention:
        later = utc_now() + timedelta(days=days)
        return Retention(
            node.database, node.spool, timedelta(hours=72), lambda: later, timedelta(days=90)
        )

    assert at(10).run_once().series == 1  # GOOD's files; BAD's failed send keeps them
    assert at(10).prune_index().series == 0  # purged just now: the rows stay
    assert at(99).prune_index().series == 0  # 89 days after the purge
    assert counts(node) == before

    pruned = at(101).prune_index()
    assert (pruned.series, pruned.instances) == (1, 3)
    after = counts(node)
    assert after["series"] == before["series"] - 1
    assert after["instances"] == before["instances"] - 3
    assert after["sends"] == before["sends"] - 1
    assert after["send_items"] == before["send_items"] - 3
    assert after["send_attempts"] < before["send_attempts"]
    assert after["routing_decisions"] == before["routing_decisions"] - 1
    assert after["series_completions"] == before["series_completions"] - 1
    # The association also carried BAD's instances: it stays while they do.
    assert after["associations"] == before["associations"]
    (left,) = node.index.list_series()
    assert left.description == "BAD"
    assert len(node.index.instances_of(left.id)) == 2
    assert [e.target for e in audit.entries()] == ["send-1"]
    assert at(200).prune_index().series == 0  # nothing more is due

    # The same series sent again, long after, is a new series, not a duplicate.
    send(good.paths, node.scp.port)
    poll_until(
        lambda: len(node.index.list_series()) == 2, timeout=30, what="the series stored again"
    )


def test_a_purged_series_that_receives_more_is_live_again_and_never_pruned(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    node = node_factory()
    first = write_ct_phantom(tmp_path / "a", CTPhantomSpec(slices=2, rows=16, columns=16, seed=7))
    send(first.paths, node.scp.port)
    later = utc_now() + timedelta(days=10)
    purge = Retention(node.database, node.spool, timedelta(hours=72), lambda: later)
    # Purged once it is complete and routed (unrouted: no rules).
    poll_until(lambda: purge.run_once().series == 1, timeout=30, what="the series purged")
    # The same series, one more slice: a new version whose file is live.
    extra = pydicom.dcmread(first.paths[0])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    extra.save_as(tmp_path / "extra.dcm")
    send((tmp_path / "extra.dcm",), node.scp.port)
    (series,) = node.index.list_series()
    assert series.instance_count == 3 and series.version == 2
    with node.database.reading() as session:
        assert session.scalar(select(SeriesRow.purged_at)) is None
    far = utc_now() + timedelta(days=200)
    prune = Retention(node.database, node.spool, timedelta(hours=72), lambda: far, timedelta(90))
    assert prune.prune_index().series == 0
    assert len(node.index.instances_of(series.id)) == 3


def test_null_keeps_the_rows_for_ever(node_factory: Callable[..., Node]) -> None:
    node = node_factory(storage={"index_retention_days": None})
    assert node.retention.prune_index().series == 0
    assert node.retention._index_retention is None
