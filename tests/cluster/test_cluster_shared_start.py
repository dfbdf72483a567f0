"""A node started on the shared folder while another receives deletes nothing of the
other's: not its acknowledged instances, not a file it has not yet indexed, and it leaves
the other's association open (issue 14, acceptance)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.tables import AssociationRow, InstanceRow
from dicomnode.testing.cluster import IndexReader, OneAssociation, cluster_node, stop_all
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until

SLICES = 40


@pytest.fixture
def cluster_url(postgres: PostgresCluster) -> Iterator[str]:
    """A new database on the session's PostgreSQL, for this test's nodes only."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


def test_a_node_started_while_another_receives_deletes_nothing_of_the_others(
    cluster_url: str, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=SLICES, rows=64, columns=64))
    sop_class = str(pydicom.dcmread(series.paths[0], stop_before_pixels=True).SOPClassUID)
    shared = tmp_path / "shared"
    a = cluster_node(node_process, cluster_url, shared, "node-a").start()
    b = cluster_node(node_process, cluster_url, shared, "node-b")
    # A file node-a has written and not yet indexed, as between its rename and its
    # commit: node-a's start-up would remove it as never acknowledged, no other node may.
    in_flight = shared / "node-a" / "objects" / "ff" / f"{os.urandom(16).hex()}.dcm"
    in_flight.write_bytes(series.paths[0].read_bytes())

    half = SLICES // 2
    with IndexReader(cluster_url) as index, OneAssociation(a.port, [sop_class]) as association:
        statuses = [association.send(path) for path in series.paths[:half]]
        b.start()  # while node-a's association is open, in the middle of the series
        statuses += [association.send(path) for path in series.paths[half:]]
        assert statuses == [0x0000] * SLICES
        association.release()

        instances = index.rows(InstanceRow)
        assert len(instances) == SLICES
        assert {row.spool_name.split("/", 1)[0] for row in instances} == {"node-a"}
        missing = [
            row.spool_name
            for row in instances
            if not (shared / row.spool_name.replace("/", "/objects/", 1)).is_file()
        ]
        assert missing == []
        assert in_flight.is_file()
        # node-b's start-up aborted nothing of node-a's: its association ended released.
        poll_until(
            lambda: all(row.state != "open" for row in index.rows(AssociationRow)),
            timeout=30,
            what="node-a to record the association's end",
        )
        assert [(row.node_id, row.state) for row in index.rows(AssociationRow)] == [
            ("node-a", "released")
        ]
    assert a.process.running and b.process.running
    stop_all([a, b])
