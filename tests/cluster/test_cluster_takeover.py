"""A node killed with SIGKILL in the middle of a send or of a pipeline job: another node
finishes the work once the lease expired, and the killed node, restarted, leaves the
other's work alone (issue 14, acceptance).

The work is held where it is, not raced: the destination holds every C-STORE until the
test opens its gate, and the model waits for a file the test creates. The node that
claimed the work is read from the index (``owner``), not guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomnode.phantom import CTPhantomSeries, CTPhantomSpec, write_ct_phantom
from dicomnode.store.tables import (
    CompletionRow,
    JobRow,
    NodeRow,
    RoutingDecisionRow,
    SendAttemptRow,
    SendRow,
    SeriesRow,
)
from dicomnode.testing.cluster import (
    GatedStoreSCP,
    IndexReader,
    OneAssociation,
    cluster_node,
    sop_uid_counts,
    stop_all,
)
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescp import StoreSCP
from dicomnode.testing.storescu import storescu
from dicomnode.testing.storescu_log import acknowledged_uids, parse_storescu_log

LEASE_WAIT_S = 60.0  # how long to wait for a takeover (the leases here are 2 s)


@pytest.fixture
def cluster_url(postgres: PostgresCluster) -> Iterator[str]:
    """A new database on the session's PostgreSQL, for this test's nodes only."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


def phantom(folder: Path) -> CTPhantomSeries:
    # 6 mm pixels: the 64x64 slices cover the whole body, spine (bone) included.
    return write_ct_phantom(
        folder, CTPhantomSpec(slices=6, rows=64, columns=64, pixel_spacing_mm=6.0)
    )


def send(series: CTPhantomSeries, node: NodeProcess) -> set[str]:
    result = storescu(list(series.paths), ae_title=NODE_AE, port=node.port)
    acknowledged = acknowledged_uids(parse_storescu_log(result.stdout))
    assert result.returncode == 0 and len(acknowledged) == len(series.paths), result.stdout
    return acknowledged


def rules(folder: Path, line: str) -> str:
    folder.mkdir()
    (folder / "rules.yaml").write_text(line + "\n")
    return str(folder)


def claims(index: IndexReader, table: type[SendRow] | type[JobRow]) -> list[tuple[str, Any]]:
    """(state, owner) of every send or job, by id."""
    return [(row.state, row.owner) for row in index.rows(table)]


def restarted_beside(node: NodeProcess, index: IndexReader) -> None:
    """Start ``node`` again and wait until its heartbeat ran once after its start-up (its
    start-up recovery, claims and first heartbeat have run by then)."""
    node_id = node.config.node_id
    node.start()

    def beaten() -> bool:
        (row,) = index.rows(NodeRow, NodeRow.id == node_id)
        started: datetime = row.started_at
        return row.stopped_at is None and row.heartbeat_at > started

    poll_until(beaten, timeout=30, what=f"{node_id}'s first heartbeat after its restart")


def test_a_send_of_a_killed_node_is_finished_by_another_after_its_lease(
    cluster_url: str, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = phantom(tmp_path / "ct")
    shared = tmp_path / "shared"
    with GatedStoreSCP(ae_title="GATED") as gated, IndexReader(cluster_url) as index:
        settings: dict[str, Any] = {
            "rules_dir": rules(tmp_path / "rules", "- {name: all, match: {}, forward_to: [gated]}"),
            "destinations": {
                "gated": {
                    "ae_title": "GATED",
                    "host": "127.0.0.1",
                    "port": gated.port,
                    "network_timeout_seconds": 600,  # held, not timed out
                    "retry": {"initial_seconds": 0.5, "max_seconds": 1.0},
                }
            },
        }
        a = cluster_node(node_process, cluster_url, shared, "node-a", **settings).start()
        expected = send(series, a)
        poll_until(
            lambda: gated.held >= 1 and claims(index, SendRow) == [("sending", "node-a")],
            timeout=60,
            what="node-a's send held at the destination",
        )
        b = cluster_node(node_process, cluster_url, shared, "node-b", **settings).start()
        a.kill()
        poll_until(
            lambda: claims(index, SendRow) == [("sending", "node-b")] and gated.held >= 2,
            timeout=LEASE_WAIT_S,
            what="node-b to take the send over once node-a's lease expired",
        )

        restarted_beside(a, index)
        assert claims(index, SendRow) == [("sending", "node-b")]  # node-a reset nothing

        gated.release()
        poll_until(
            lambda: claims(index, SendRow) == [("done", None)],
            timeout=60,
            what="the send to be done",
        )
        assert set(gated.uids()) == expected
        (row,) = index.rows(SendRow)
        assert (row.attempts, row.sent_count) == (2, len(series.paths))  # node-a's and node-b's
        attempts = index.rows(SendAttemptRow)
        assert [attempt.outcome for attempt in attempts] == ["delivered"]  # node-b's
        assert a.process.running and b.process.running
        stop_all([a, b])


def test_a_job_of_a_killed_node_runs_on_another_after_its_lease_and_its_results_go_once(
    cluster_url: str, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = phantom(tmp_path / "ct")
    shared = tmp_path / "shared"
    release = tmp_path / "release-the-model"
    with StoreSCP(ae_title="PACS") as pacs, IndexReader(cluster_url) as index:
        held = {
            "kind": "python",
            "function": "dicomnode.testing.cluster:held_threshold",
            "options": {"release_file": str(release)},
            # In the node's process: killed with it, no orphan left waiting.
            "isolation": "thread",
            "timeout_seconds": 600,
        }
        line = "- {name: bone, match: {Modality: CT}, pipeline: held-bone, send_to: [pacs]}"
        settings: dict[str, Any] = {
            "rules_dir": rules(tmp_path / "rules", line),
            "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            "models": {"held": held},
            "pipelines": {"held-bone": bone_pipeline("held")},
        }
        a = cluster_node(node_process, cluster_url, shared, "node-a", **settings).start()
        send(series, a)
        poll_until(
            lambda: claims(index, JobRow) == [("running", "node-a")],
            timeout=60,
            what="node-a to run the job",
        )
        b = cluster_node(node_process, cluster_url, shared, "node-b", **settings).start()
        a.kill()
        poll_until(
            lambda: claims(index, JobRow) == [("running", "node-b")],
            timeout=LEASE_WAIT_S,
            what="node-b to take the job over once node-a's lease expired",
        )

        restarted_beside(a, index)
        assert claims(index, JobRow) == [("running", "node-b")]  # node-a reset nothing

        release.touch()
        poll_until(
            lambda: claims(index, JobRow) == [("done", None)], timeout=120, what="the job done"
        )
        poll_until(
            lambda: [s.state for s in index.rows(SendRow)] == ["done", "done"],
            timeout=60,
            what="the SEG and the SR sent",
        )
        (job,) = index.rows(JobRow)
        assert job.attempts == 2  # node-a's, killed, and node-b's
        results = index.rows(SeriesRow, SeriesRow.origin == "result")
        assert sorted(s.modality or "" for s in results) == ["SEG", "SR"]  # one set
        arrived = [pydicom.dcmread(p, stop_before_pixels=True) for p in pacs.files()]
        assert sorted(ds.Modality for ds in arrived) == ["SEG", "SR"]
        assert {ds.SeriesInstanceUID for ds in arrived} == {s.series_uid for s in results}
        assert a.process.running and b.process.running
        stop_all([a, b])


def test_a_series_whose_receiver_was_killed_before_it_completed_is_completed_by_another(
    cluster_url: str, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = phantom(tmp_path / "ct")
    sop_class = str(pydicom.dcmread(series.paths[0], stop_before_pixels=True).SOPClassUID)
    shared = tmp_path / "shared"
    with StoreSCP(ae_title="ARCHIVE") as archive, IndexReader(cluster_url) as index:
        settings: dict[str, Any] = {
            "rules_dir": rules(tmp_path / "rules", "- {name: all, match: {}, forward_to: [pacs]}"),
            "destinations": {
                "pacs": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}
            },
        }
        a, b = (
            cluster_node(node_process, cluster_url, shared, node_id, **settings)
            for node_id in ("node-a", "node-b")
        )
        a.start()
        b.start()
        # The association stays open: node-a's series is due 4 s (quiet_seconds) after
        # its last instance, and node-a dies first, its timer with it.
        with OneAssociation(a.port, [sop_class]) as association:
            assert [association.send(p) for p in series.paths] == [0x0000] * len(series.paths)
            a.kill()
        assert [s.state for s in index.rows(SeriesRow)] == ["receiving"]

        poll_until(
            lambda: [s.state for s in index.rows(SendRow)] == ["done"],
            timeout=LEASE_WAIT_S,
            what="node-b to complete, route and forward node-a's series",
        )
        (row,) = index.rows(SeriesRow)
        assert (row.state, row.instance_count, row.version) == ("complete", len(series.paths), 1)
        assert len(index.rows(CompletionRow)) == 1
        assert len(index.rows(RoutingDecisionRow)) == 1
        expected = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.paths
        }
        assert sop_uid_counts(archive.files()) == dict.fromkeys(expected, 1)
        assert b.process.running
        stop_all([b])
