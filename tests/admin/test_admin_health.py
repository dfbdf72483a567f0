"""/healthz and /readyz: alive, and ready only with listener, database and disk all well."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from dicomnode.admin import DiskWatermark, tcp_listening
from dicomnode.node import Node
from dicomnode.store.database import Database
from dicomnode.testing.ports import refusing_port


def checks(client: TestClient, expected_status: int) -> dict[str, dict[str, object]]:
    response = client.get("/readyz", headers={"Authorization": ""})
    assert response.status_code == expected_status, response.text
    body = response.json()
    assert body["ready"] is (expected_status == 200)
    return {check["name"]: check for check in body["checks"]}


def test_a_running_node_is_alive_and_ready(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    assert client.get("/healthz").json() == {"status": "ok"}
    by_name = checks(client, 200)
    assert sorted(by_name) == ["database", "disk", "scp"]
    assert all(check["ok"] for check in by_name.values())
    assert "GiB free" in str(by_name["disk"]["detail"])


def test_probing_the_listener_opens_no_association(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    for _ in range(3):
        checks(client, 200)
    assert node.index.associations() == []


def test_a_stopped_listener_is_not_ready(node: Node, client_for: Callable[..., TestClient]) -> None:
    client = client_for(node)
    node.scp.stop()
    by_name = checks(client, 503)
    assert by_name["scp"]["ok"] is False
    assert by_name["database"]["ok"] is True
    assert client.get("/healthz").status_code == 200


def test_a_spool_above_its_high_water_mark_is_not_ready_until_space_returns(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    spool = node.config.spool_path
    full = client_for(node, disk=DiskWatermark(spool, min_free_bytes=2**62))
    disk = checks(full, 503)["disk"]
    assert disk["ok"] is False
    assert "above the high-water mark" in str(disk["detail"])
    also_full = client_for(node, disk=DiskWatermark(spool, high_water_percent=0.0))
    checks(also_full, 503)
    roomy = client_for(node, disk=DiskWatermark(spool, high_water_percent=100.0, min_free_bytes=1))
    checks(roomy, 200)


def test_an_unreachable_database_is_not_ready(
    node: Node, client_for: Callable[..., TestClient], tmp_path: Path
) -> None:
    broken = Database(f"sqlite:///{tmp_path}/missing/folder/index.db")
    database = checks(client_for(node, database=broken), 503)["database"]
    assert database["ok"] is False
    assert "database unreachable" in str(database["detail"])


def test_the_listener_probe_sees_a_closed_port(node: Node) -> None:
    assert tcp_listening("0.0.0.0", node.scp.port)  # a wildcard is probed on loopback
    assert not tcp_listening("127.0.0.1", refusing_port())


def test_the_watermark_of_a_spool_not_created_yet_is_its_parents(tmp_path: Path) -> None:
    usage = DiskWatermark(tmp_path / "not" / "yet").usage()
    assert usage.total_bytes > 0
    assert 0 < usage.free_bytes <= usage.total_bytes
