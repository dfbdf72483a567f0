"""``/api/cluster``: every node process on this database, alive or not, and its work.

A node that stopped renewing its heartbeat for a lease's length is "lost": its claims
expire and the other nodes take its work over (docs/scaling.md).
"""

from __future__ import annotations

from fastapi import APIRouter

from dicomnode.admin.context import Context
from dicomnode.admin.schemas import ClusterNodeOut
from dicomnode.store.nodes import cluster

router = APIRouter(prefix="/api/cluster", tags=["cluster"])


@router.get("", summary="The nodes of the cluster: roles, version, heartbeat, leases held")
def cluster_nodes(context: Context) -> list[ClusterNodeOut]:
    services = context.services
    nodes = cluster(services.database, services.clock(), services.lease_seconds)
    return [
        ClusterNodeOut(
            id=node.id,
            host=node.host,
            pid=node.pid,
            version=node.version,
            roles=list(node.roles),
            started_at=node.started_at,
            heartbeat_at=node.heartbeat_at,
            stopped_at=node.stopped_at,
            state=node.state,
            leases=node.leases,
            this_node=node.id == services.node_id,
        )
        for node in nodes
    ]
