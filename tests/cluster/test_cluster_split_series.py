"""A series received half by one node and half by another, at the same time, completes
once, is routed once and runs its pipeline once (issue 14, acceptance)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest

from dicomnode.store.tables import (
    CompletionRow,
    InstanceRow,
    JobRow,
    RoutingDecisionRow,
    SendRow,
    SeriesRow,
)
from dicomnode.testing.cluster import IndexReader, cluster_node, stop_all
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescp import StoreSCP
from dicomnode.testing.storescu import StoreSCUProcess
from dicomnode.testing.storescu_log import acknowledged_uids, parse_storescu_log

FIRST = 14  # instances the first node gets; the second gets the rest


@pytest.fixture
def cluster_url(postgres: PostgresCluster) -> Iterator[str]:
    """A new database on the session's PostgreSQL, for this test's nodes only."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


def test_a_series_split_over_two_nodes_completes_routes_and_runs_its_pipeline_once(
    cluster_url: str,
    node_process: Callable[..., NodeProcess],
    real_ct_images: list[Path],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bone.yaml").write_text(
        "- {name: bone, match: {Modality: CT}, pipeline: bone, send_to: [pacs]}\n"
    )
    model = {
        "kind": "python",
        "function": "dicomnode.testing.models:slow_threshold",
        "options": {"seconds": 0.0, "threshold": 300.0},
        "isolation": "thread",
    }
    shared = tmp_path / "shared"
    with StoreSCP(ae_title="PACS") as pacs, IndexReader(cluster_url) as index:
        nodes = [
            cluster_node(
                node_process,
                cluster_url,
                shared,
                node_id,
                rules_dir=str(rules),
                destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
                models={"bone": model},
                pipelines={"bone": bone_pipeline("bone")},
            )
            for node_id in ("node-a", "node-b")
        ]
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: node.start(timeout=60), nodes))

        # The first 14 instances to node-a, the rest to node-b, both senders at once: the
        # two nodes create the series row, count its instances and time its completion
        # together.
        parts = [real_ct_images[:FIRST], real_ct_images[FIRST:]]
        acknowledged: set[str] = set()
        with ExitStack() as running:
            senders = [
                running.enter_context(StoreSCUProcess(part, ae_title=NODE_AE, port=node.port))
                for part, node in zip(parts, nodes, strict=True)
            ]
            for sender in senders:
                assert sender.wait(120) == 0, sender.log_text()[-3000:]
                acknowledged |= acknowledged_uids(parse_storescu_log(sender.log_text()))
        assert len(acknowledged) == len(real_ct_images)

        poll_until(
            lambda: (
                [j.state for j in index.rows(JobRow)] == ["done"]
                and [s.state for s in index.rows(SendRow)] == ["done", "done"]
            ),
            timeout=120,
            what="the job done and its SEG and SR sent",
        )
        (series,) = index.rows(SeriesRow, SeriesRow.origin == "received")
        assert (series.instance_count, series.version, series.state) == (
            len(real_ct_images),
            1,
            "complete",
        )
        instances = index.rows(InstanceRow, InstanceRow.series_id == series.id)
        by_node = Counter(row.spool_name.split("/", 1)[0] for row in instances)
        assert by_node == {"node-a": FIRST, "node-b": len(real_ct_images) - FIRST}

        completions = index.rows(CompletionRow)
        assert [(c.series_id, c.version, c.instance_count) for c in completions] == [
            (series.id, 1, len(real_ct_images))
        ]
        assert [(d.series_id, d.version) for d in index.rows(RoutingDecisionRow)] == [
            (series.id, 1)
        ]
        (job,) = index.rows(JobRow)
        assert (job.series_id, job.series_version, job.attempts) == (series.id, 1, 1)

        arrived = [pydicom.dcmread(p, stop_before_pixels=True) for p in pacs.files()]
        assert sorted(ds.Modality for ds in arrived) == ["SEG", "SR"]
        assert {ds.StudyInstanceUID for ds in arrived} == {series.study_uid}
        assert all(node.process.running for node in nodes)
    stop_all(nodes)
