"""/api/destinations: each destination's queue and a live C-ECHO against it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dicomnode.node import Node
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_each_destination_is_echoed_up_down_or_refusing(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    make_destination: Callable[..., dict[str, Any]],
) -> None:
    down = refusing_port()
    with StoreSCP(ae_title="PACS") as pacs, StoreSCP(ae_title="NO", extra_args=["--refuse"]) as no:
        node = node_factory(
            destinations={
                "pacs": make_destination("PACS", pacs.port),
                "down": make_destination("DOWN", down),
                "refuser": {**make_destination("NO", no.port), "calling_ae": "OTHER"},
            }
        )
        response = client_for(node).get("/api/destinations")
    assert response.status_code == 200, response.text
    by_name = {d["name"]: d for d in response.json()}
    assert sorted(by_name) == ["down", "pacs", "refuser"]

    pacs_row = by_name["pacs"]
    assert (pacs_row["ae_title"], pacs_row["host"]) == ("PACS", "127.0.0.1")
    assert pacs_row["calling_ae"] == "DICOMNODE"
    assert pacs_row["echo"]["ok"] is True
    assert pacs_row["echo"]["status"] == 0
    assert 0 < pacs_row["echo"]["ms"] < 5000
    assert pacs_row["echo"]["error"] is None

    for name in ("down", "refuser"):
        echo = by_name[name]["echo"]
        assert echo["ok"] is False
        assert echo["status"] is None
        assert echo["error"]
    assert by_name["refuser"]["calling_ae"] == "OTHER"
    # storescp --refuse answers A-ASSOCIATE-RJ, though it may close the socket before our
    # side reads it (then "aborted"): either way the check names the peer and fails.
    assert "NO@127.0.0.1" in by_name["refuser"]["echo"]["error"]
    assert "DOWN@127.0.0.1" in by_name["down"]["echo"]["error"]


def test_the_queue_of_a_destination_shows_waiting_and_failed_sends(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    make_destination: Callable[..., dict[str, Any]],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
) -> None:
    write_rules("- {name: fwd, match: {Modality: CT}, forward_to: [down]}\n")
    node = node_factory(destinations={"down": make_destination("DOWN", refusing_port())})
    client = client_for(node)
    send_phantom(node)
    poll_until(lambda: bool(node.outbox.queue.list_sends()), timeout=60, what="a send queued")
    (row,) = client.get("/api/destinations", params={"echo": "false"}).json()
    assert row["echo"] is None
    assert row["pending"] == 1
    assert row["failed"] == 0
    (send,) = node.outbox.queue.list_sends()
    assert datetime.fromisoformat(row["oldest_pending_at"]) == send.created_at


def test_no_destinations_is_an_empty_list(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    assert client_for(node).get("/api/destinations").json() == []
