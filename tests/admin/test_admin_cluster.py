"""``/api/cluster`` and the cluster metrics: the nodes on one index, their state and work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from dicomnode.node import Node
from dicomnode.store.completion import utc_now
from dicomnode.store.tables import NodeRow

pytestmark = pytest.mark.usefixtures("database_url")


def test_two_nodes_on_one_index_list_each_other_and_a_silent_one_is_lost(
    node_factory: Callable[..., Node], client_for: Callable[..., TestClient]
) -> None:
    first = node_factory(node={"id": "node-a", "lease_seconds": 3})
    second = node_factory(
        node={"id": "node-b", "lease_seconds": 3, "roles": ["pipeline"]},
        storage={"path": str(first.config.storage.path.parent / "var-b")},
    )
    client = client_for(first)

    nodes = {n["id"]: n for n in client.get("/api/cluster").json()}
    assert set(nodes) == {"node-a", "node-b"}
    assert nodes["node-a"]["this_node"] and not nodes["node-b"]["this_node"]
    assert nodes["node-b"]["roles"] == ["pipeline"]
    assert {n["state"] for n in nodes.values()} == {"up"}
    assert nodes["node-a"]["leases"] == {"sends": 0, "jobs": 0, "routing": 0}

    # node-b's heartbeat stops (as if its machine froze): lost after a lease's length.
    second.scheduler.pause()
    with first.database.writing() as session:
        session.execute(
            update(NodeRow)
            .where(NodeRow.id == "node-b")
            .values(heartbeat_at=utc_now() - timedelta(seconds=60))
        )
    nodes = {n["id"]: n for n in client.get("/api/cluster").json()}
    assert nodes["node-b"]["state"] == "lost"
    assert nodes["node-a"]["state"] == "up"

    metrics = client.get("/metrics").text
    assert 'dicomnode_node_info{node_id="node-a",roles="receive,route,pipeline,send"' in metrics
    assert 'dicomnode_leases_held{kind="sends"} 0.0' in metrics
    assert "dicomnode_cluster_nodes" in metrics


def test_a_stopped_node_says_so(
    node_factory: Callable[..., Node], client_for: Callable[..., TestClient]
) -> None:
    first = node_factory(node={"id": "node-a"})
    second = node_factory(
        node={"id": "node-b"},
        storage={"path": str(first.config.storage.path.parent / "var-b")},
    )
    second.stop()
    nodes = {n["id"]: n for n in client_for(first).get("/api/cluster").json()}
    assert nodes["node-b"]["state"] == "stopped"
    assert nodes["node-b"]["stopped_at"] is not None
    assert nodes["node-a"]["state"] == "up"
