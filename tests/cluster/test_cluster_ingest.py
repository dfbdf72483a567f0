"""Three nodes on one PostgreSQL and one shared folder take 60 series of the real CT in
parallel and forward every instance exactly once (issue 14, acceptance)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.tables import (
    CompletionRow,
    InstanceRow,
    RoutingDecisionRow,
    SendRow,
    SeriesRow,
)
from dicomnode.testing.cluster import (
    IndexReader,
    cluster_node,
    copy_series,
    node_settings,
    sop_uid_counts,
    stop_all,
)
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescp import StoreSCP
from dicomnode.testing.storescu import StoreSCUProcess, storescu
from dicomnode.testing.storescu_log import parse_storescu_log

SERIES = 60
NODES = ("node-a", "node-b", "node-c")


@pytest.fixture
def cluster_url(postgres: PostgresCluster) -> Iterator[str]:
    """A new database on the session's PostgreSQL, for this test's nodes only."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.mark.slow
def test_three_nodes_forward_each_of_60_real_ct_series_exactly_once(
    cluster_url: str,
    node_process: Callable[..., NodeProcess],
    real_ct_images: list[Path],
    tmp_path: Path,
) -> None:
    copies = copy_series(real_ct_images, tmp_path / "series", SERIES)
    expected = {uid for copy in copies for uid in copy.sop_uids}
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "forward.yaml").write_text("- {name: all, match: {}, forward_to: [archive]}\n")
    shared = tmp_path / "shared"
    with StoreSCP(ae_title="ARCHIVE") as archive:
        archive_settings = {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}
        nodes = [
            cluster_node(
                node_process,
                cluster_url,
                shared,
                node_id,
                rules_dir=str(rules),
                destinations={"archive": archive_settings},
            )
            for node_id in NODES
        ]
        with ThreadPoolExecutor(len(nodes)) as pool:  # started together, on an empty database
            list(pool.map(lambda node: node.start(timeout=60), nodes))

        # Round robin: series i to node i % 3, the three senders at once.
        senders = [
            StoreSCUProcess(
                [copy.folder for copy in copies[i :: len(nodes)]], ae_title=NODE_AE, port=node.port
            )
            for i, node in enumerate(nodes)
        ]
        acknowledged: set[str] = set()
        with ExitStack() as running:
            for sender in senders:
                running.enter_context(sender)  # started here; stopped by PID at the end
            for sender in senders:
                code = sender.wait(300)
                attempts = parse_storescu_log(sender.log_text())
                assert code == 0, sender.log_text()[-3000:]
                acknowledged |= {a.sop_instance_uid or "" for a in attempts if a.acknowledged}
        assert acknowledged == expected

        with IndexReader(cluster_url) as index:

            def sends_done() -> bool:
                sends = index.rows(SendRow)
                return len(sends) == SERIES and all(s.state == "done" for s in sends)

            poll_until(sends_done, timeout=300, what=f"{SERIES} sends done")
            arrived = sop_uid_counts(archive.wait_for_files(len(expected), timeout=60))
            assert set(arrived) == expected
            assert [uid for uid, n in arrived.items() if n > 1] == []
            assert len(archive.files()) == len(expected)  # nothing came twice, by any name

            series = index.rows(SeriesRow)
            assert sorted(s.series_uid for s in series) == sorted(c.series_uid for c in copies)
            assert {(s.instance_count, s.version, s.state) for s in series} == {
                (len(real_ct_images), 1, "complete")
            }
            ids = sorted(s.id for s in series)
            completions = index.rows(CompletionRow)
            assert sorted(c.series_id for c in completions) == ids  # each completed once
            assert all(c.consumed_at is not None for c in completions)
            decisions = index.rows(RoutingDecisionRow)
            assert sorted(d.series_id for d in decisions) == ids  # each routed once
            sends = index.rows(SendRow)
            assert sorted(s.series_id for s in sends) == ids  # each forwarded once
            assert {(s.sent_count, s.owner) for s in sends} == {(len(real_ct_images), None)}

            instances = index.rows(InstanceRow)
            assert len(instances) == len(expected)
            # Each node wrote its own instances under its own folder of the shared one.
            writers = {row.spool_name.split("/", 1)[0] for row in instances}
            assert writers == set(NODES)
            assert all(
                (shared / row.spool_name.replace("/", "/objects/", 1)).is_file()
                for row in instances
            )
    for node in nodes:
        assert node.process.running, node.logs()[-3000:]
    stop_all(nodes)


def test_a_node_on_shared_storage_accepts_without_a_local_storage_folder(
    cluster_url: str, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    # Its spool on shared storage and its index on PostgreSQL: nothing creates storage.path
    # but the node's start-up, and it measures free space where its objects go.
    node = node_process(**node_settings(cluster_url, tmp_path / "shared", "node-a")).start()
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    result = storescu(list(series.paths), ae_title=NODE_AE, port=node.port)
    attempts = parse_storescu_log(result.stdout)
    assert [a.acknowledged for a in attempts] == [True, True], result.stdout[-2000:]
