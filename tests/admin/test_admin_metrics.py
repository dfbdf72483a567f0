"""/metrics: the counts a test run caused, read back in Prometheus' format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.presentation import build_context

from dicomnode.admin import ReceiveCounters
from dicomnode.config import NodeConfig
from dicomnode.dicom.scp import StorageSCP
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.database import Database
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_a_forwarding_run_caused(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
) -> None:
    write_rules("- {name: chest, match: {SeriesDescription: CT CHEST}, forward_to: [pacs]}\n")
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(destinations={"pacs": make_destination("PACS", pacs.port)})
        client = client_for(node)
        before = scrape(client)
        assert value(before, "dicomnode_outbox_depth", destination="pacs") == 0
        send_phantom(node, "CT CHEST", slices=6, calling_ae="SCANNER1")
        send_phantom(node, "CT SCOUT", slices=2, calling_ae="SCANNER2")
        pacs.wait_for_files(6, timeout=60)
        poll_until(lambda: bool(node.outbox.queue.list_sends("done")), timeout=30, what="send done")
        poll_until(lambda: len(node.router.decisions(2)) == 1, timeout=30, what="both routed")
    samples = scrape(client)
    sizes = {
        series.description: sum(i.size for i in node.index.instances_of(series.id))
        for series in node.index.list_series()
    }

    received = "dicomnode_instances_received_total"
    assert value(samples, received, calling_ae="SCANNER1", outcome="stored") == 6
    assert value(samples, received, calling_ae="SCANNER2", outcome="stored") == 2
    received_bytes = "dicomnode_received_bytes_total"
    assert value(samples, received_bytes, calling_ae="SCANNER1") == sizes["CT CHEST"]
    assert value(samples, received_bytes, calling_ae="SCANNER2") == sizes["CT SCOUT"]
    assert value(samples, "dicomnode_associations_total", outcome="accepted") == 2
    assert value(samples, "dicomnode_associations_total", outcome="released") == 2
    assert value(samples, "dicomnode_associations_total", outcome="aborted") == 0
    assert value(samples, "dicomnode_associations_open") == 0
    assert value(samples, "dicomnode_series", state="complete", origin="received") == 2
    completed = sum(
        v for (name, _), v in samples.items() if name == "dicomnode_series_completed_total"
    )
    assert completed == 2
    assert value(samples, "dicomnode_sends", destination="pacs", state="done") == 1
    assert (
        value(samples, "dicomnode_send_attempts_total", destination="pacs", outcome="delivered")
        == 1
    )
    assert value(samples, "dicomnode_outbox_depth", destination="pacs") == 0
    assert value(samples, "dicomnode_outbox_instances", destination="pacs") == 0
    assert value(samples, "dicomnode_outbox_oldest_age_seconds", destination="pacs") == 0
    assert value(samples, "dicomnode_rules_info", version=node.rules.current.version) == 1
    assert value(samples, "dicomnode_rules_edit_rejected") == 0
    assert value(samples, "dicomnode_metrics_database_up") == 1
    assert value(samples, "dicomnode_spool_free_bytes") > 0
    assert value(samples, "dicomnode_spool_above_high_water") == 0
    assert not [name for name, _ in samples if name.startswith("dicomnode_jobs")]
    assert ("process_resident_memory_bytes", ()) in samples


def test_a_waiting_send_shows_as_outbox_depth_and_age(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
) -> None:
    write_rules("- {name: fwd, match: {Modality: CT}, forward_to: [down]}\n")
    node = node_factory(destinations={"down": make_destination("DOWN", 1)})
    client = client_for(node)
    send_phantom(node)
    poll_until(
        lambda: any(s.attempts >= 2 for s in node.outbox.queue.list_sends("pending")),
        timeout=60,
        what="two failed attempts",
    )
    samples = scrape(client)
    assert value(samples, "dicomnode_outbox_depth", destination="down") == 1
    assert value(samples, "dicomnode_outbox_instances", destination="down") == 6
    assert value(samples, "dicomnode_outbox_oldest_age_seconds", destination="down") > 0
    attempts = value(
        samples, "dicomnode_send_attempts_total", destination="down", outcome="temporary"
    )
    assert attempts >= 2


def test_pipeline_stage_and_inference_latencies_come_from_job_timelines(
    pipeline_run: tuple[Node, TestClient, Any],
) -> None:
    node, client, _series = pipeline_run
    samples = scrape(client)
    (job,) = node.workers.queue.list_jobs()
    stages = {stage["stage"]: stage["seconds"] for stage in job.timeline["stages"]}
    for stage, seconds in stages.items():
        labels = {"pipeline": "bone", "stage": stage}
        assert value(samples, "dicomnode_pipeline_stage_seconds_count", **labels) == 1
        assert value(samples, "dicomnode_pipeline_stage_seconds_sum", **labels) == pytest.approx(
            seconds
        )
        assert value(samples, "dicomnode_pipeline_stage_seconds_bucket", le="+Inf", **labels) == 1
    assert value(samples, "dicomnode_model_inference_seconds_count", pipeline="bone") == 1
    assert value(samples, "dicomnode_pipeline_job_seconds_count", pipeline="bone") == 1
    assert value(samples, "dicomnode_jobs", pipeline="bone", state="done") == 1
    assert value(samples, "dicomnode_sends", destination="pacs", state="done") == 2
    assert value(samples, "dicomnode_series", state="complete", origin="result") == 2
    # A second scrape reads no job twice.
    again = scrape(client)
    assert value(again, "dicomnode_model_inference_seconds_count", pipeline="bone") == 1


@pytest.fixture
def counted_scp(node: Node) -> Iterator[tuple[StorageSCP, ReceiveCounters]]:
    """A second listener on the node's ingest, wrapped as node.py wraps it with counters."""
    counters = ReceiveCounters()
    scp = StorageSCP(
        NodeConfig(host=LOOPBACK, port=0),
        counters.caller_policy(lambda ae_title, _host, _subject: ae_title != "INTRUDER"),
        counters.sink(node.ingest),
    )
    scp.start()
    yield scp, counters
    scp.stop()


def _store(port: int, calling_ae: str, *datasets: Dataset) -> list[int]:
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [build_context(CT, EXPLICIT_LE)]
    assoc = ae.associate(LOOPBACK, port, ae_title="DICOMNODE")
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_refusals_duplicates_and_rejected_callers_are_counted_in_process(
    node: Node,
    client_for: Callable[..., TestClient],
    counted_scp: tuple[StorageSCP, ReceiveCounters],
) -> None:
    scp, counters = counted_scp
    good, unusable = ct_phantom_datasets(CTPhantomSpec(slices=2, rows=32, columns=32))
    del unusable.SeriesInstanceUID
    assert _store(scp.port, "MODALITY", good, good, unusable) == [0, 0, 0xC000]
    assert _store(scp.port, "INTRUDER", good) == []
    samples = scrape(client_for(node, counters=counters))
    received = "dicomnode_instances_received_total"
    assert value(samples, received, calling_ae="MODALITY", outcome="stored") == 1
    assert value(samples, received, calling_ae="MODALITY", outcome="duplicate") == 1
    assert value(samples, received, calling_ae="MODALITY", outcome="rejected") == 1
    rejected = "dicomnode_instances_rejected_total"
    assert value(samples, rejected, calling_ae="MODALITY", status="0xC000") == 1
    assert value(samples, "dicomnode_associations_total", outcome="rejected") == 1
    assert value(samples, "dicomnode_associations_total", outcome="accepted") == 1


def test_without_the_database_the_scrape_still_answers(
    node: Node, client_for: Callable[..., TestClient], tmp_path: Path
) -> None:
    broken = Database(f"sqlite:///{tmp_path}/missing/folder/index.db")
    samples = scrape(client_for(node, database=broken))
    assert value(samples, "dicomnode_metrics_database_up") == 0
    assert value(samples, "dicomnode_spool_free_bytes") > 0


def test_a_scraper_asking_for_openmetrics_gets_it(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    response = client_for(node).get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
