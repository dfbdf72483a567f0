"""PostgreSQL stopped and started again in the middle of an association: the node answers
0xA700 meanwhile, loses nothing it acknowledged, and takes instances again by itself once
the database is back, with no restart (issue 14, acceptance).

The test runs its own PostgreSQL: stopping the session's would disturb other tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.tables import InstanceRow, SeriesRow
from dicomnode.testing.cluster import IndexReader, OneAssociation, cluster_node
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescu import storescu
from dicomnode.testing.storescu_log import acknowledged_uids, parse_storescu_log

OUT_OF_RESOURCES = 0xA700
PART = 5  # instances sent before, during and after the outage


@pytest.fixture
def own_postgres(postgres: PostgresCluster) -> Iterator[PostgresCluster]:
    """A PostgreSQL of this test's own (``postgres`` only for its skip when none is
    installed)."""
    with PostgresCluster() as cluster:
        yield cluster


def test_postgres_restarted_during_ingest_costs_a700_loses_nothing_and_ingest_resumes(
    own_postgres: PostgresCluster, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    url = own_postgres.url(own_postgres.create_database())
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=3 * PART, rows=32, columns=32))
    before, during, after = (series.paths[i * PART : (i + 1) * PART] for i in range(3))
    uid = {p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.paths}
    sop_class = str(pydicom.dcmread(series.paths[0], stop_before_pixels=True).SOPClassUID)
    shared = tmp_path / "shared"
    node = cluster_node(node_process, url, shared, "node-a").start()

    acknowledged: set[str] = set()
    with OneAssociation(node.port, [sop_class]) as association:
        statuses = [association.send(p) for p in before]
        own_postgres.stop_server()
        statuses += [association.send(p) for p in during]
        # A new association meanwhile is accepted unrecorded, and each store gets 0xA700
        # (a temporary failure senders retry), not an abort (dicomnode.dicom.scp).
        down = storescu(list(during), ae_title=NODE_AE, port=node.port, extra_args=["-d"])
        attempts = parse_storescu_log(down.stdout)
        assert [a.status for a in attempts] == [OUT_OF_RESOURCES] * PART, down.stdout[-3000:]
        assert acknowledged_uids(attempts) == set()
        own_postgres.start_server()
        statuses += [association.send(p) for p in after]  # the same association goes on
        acknowledged |= {uid[p] for p, s in zip(series.paths, statuses, strict=True) if s == 0}
    assert statuses == [0x0000] * PART + [OUT_OF_RESOURCES] * PART + [0x0000] * PART

    # A later sender succeeds, with no restart: the refused instances, sent again.
    later = storescu(list(during), ae_title=NODE_AE, port=node.port)
    assert later.returncode == 0, later.stdout[-3000:]
    acknowledged |= acknowledged_uids(parse_storescu_log(later.stdout))
    assert acknowledged == set(uid.values())

    with IndexReader(url) as index:
        instances = index.rows(InstanceRow)
        assert {row.sop_instance_uid for row in instances} == acknowledged
        files = {p.relative_to(shared) for p in shared.glob("node-a/objects/*/*.dcm")}
        indexed = {Path(row.spool_name.replace("/", "/objects/", 1)) for row in instances}
        assert files == indexed  # every acknowledged file there, no refused one left over
        # Its timers and workers came back too: the series completes.
        poll_until(
            lambda: (
                [(s.state, s.instance_count) for s in index.rows(SeriesRow)]
                == [("complete", 3 * PART)]
            ),
            timeout=60,
            what="the series to complete",
        )
    assert node.process.running, node.logs()[-3000:]
    node.stop()
