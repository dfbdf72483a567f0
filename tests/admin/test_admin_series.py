"""/api/series: what arrived, how it completed, what the rules decided, what ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomnode.node import Node
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_a_received_series_is_listed_and_filtered(
    node: Node,
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    routed: Callable[[Node, str], None],
) -> None:
    client = client_for(node)
    assert client.get("/api/series").json() == []
    chest = send_phantom(node, "CT CHEST")
    head = send_phantom(node, "CT HEAD", slices=3)
    routed(node, chest.series_instance_uid)
    routed(node, head.series_instance_uid)

    listed = client.get("/api/series").json()
    assert [s["series_uid"] for s in listed] == [
        head.series_instance_uid,
        chest.series_instance_uid,
    ]  # most recently arrived first
    first = listed[1]
    assert first["instance_count"] == 6
    assert first["state"] == "complete"
    assert first["origin"] == "received"
    assert first["description"] == "CT CHEST"
    assert first["modality"] == "CT"

    assert len(client.get("/api/series", params={"state": "complete"}).json()) == 2
    assert client.get("/api/series", params={"state": "receiving"}).json() == []
    assert len(client.get("/api/series", params={"modality": "CT"}).json()) == 2
    assert client.get("/api/series", params={"modality": "MR"}).json() == []
    assert client.get("/api/series", params={"origin": "result"}).json() == []
    (newest,) = client.get("/api/series", params={"limit": 1}).json()
    assert newest["series_uid"] == head.series_instance_uid


def test_bad_series_filters_are_422(node: Node, client_for: Callable[..., TestClient]) -> None:
    client = client_for(node)
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"state": "lost"}):
        assert client.get("/api/series", params=params).status_code == 422, params


def test_a_series_shows_instances_completion_decision_and_its_send(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
) -> None:
    write_rules("- {name: ct-to-pacs, match: {Modality: CT}, forward_to: [pacs]}\n")
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(destinations={"pacs": make_destination("PACS", pacs.port)})
        client = client_for(node)
        series = send_phantom(node)
        poll_until(
            lambda: bool(node.outbox.queue.list_sends("done")), timeout=60, what="the send done"
        )
    response = client.get(f"/api/series/{series.series_instance_uid}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["series"]["series_uid"] == series.series_instance_uid
    assert len(detail["instances"]) == 6
    assert {i["sop_instance_uid"] for i in detail["instances"]} == {
        pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in series.paths
    }
    (completion,) = detail["completions"]
    assert completion["version"] == 1
    assert completion["instance_count"] == 6
    assert completion["reason"] in {"quiet", "settle", "max_wait"}
    (decision,) = detail["decisions"]
    assert decision["matched_rules"] == ["ct-to-pacs"]
    assert decision["forward_to"] == ["pacs"]
    assert decision["unrouted"] is False
    assert decision["rules_version"] == node.rules.current.version
    (send,) = detail["jobs"]
    assert send["kind"] == "send"
    assert send["id"].startswith("send-")
    assert send["state"] == "done"
    assert send["destination"] == "pacs"
    assert send["sent_count"] == 6


def test_an_unknown_series_is_404(node: Node, client_for: Callable[..., TestClient]) -> None:
    response = client_for(node).get("/api/series/1.2.3.4")
    assert response.status_code == 404
    assert "1.2.3.4" in response.json()["detail"]
