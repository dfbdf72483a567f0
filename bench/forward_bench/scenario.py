"""One timed forward of the same files to a fresh storescp, by storescu or by the node.

The baseline is DCMTK storescu sending the files to storescp, timed from exec to exit.
The node's run is the real path an operator sets up: storescu sends the series into the
node, the series completes (the settle wait after the association's release), a rule
``forward_to: [archive]`` queues a send, and the node's outbox worker sends the stored
files to storescp. The send's own duration is the ``seconds`` of the node's
``send_delivered`` event (claim of the send to its last acknowledgement recorded); the
wall time runs from storescu's exit (the last image acknowledged and released) to the
last file storescp wrote, and is split at the node's own log events.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from benchkit import arrivals, nodelog
from benchkit.procstats import cpu_s, peak_rss
from dicomnode.testing.node import NODE_AE, NodeProcess
from ingest_bench.hotspots import Attacher
from ingest_bench.measure import DataSet
from ingest_bench.receivers import StorescpReceiver
from ingest_bench.sender import send

FORWARD_RULE = [{"name": "fwd", "match": {"Modality": "CT"}, "forward_to": ["archive"]}]
_NODE_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Baseline:
    """storescu -> storescp."""

    wall_s: float
    sender_rc: int
    expected: int
    received: int
    storescu_cpu_s: float

    @property
    def ok(self) -> bool:
        return self.sender_rc == 0 and self.received == self.expected


@dataclass(frozen=True, slots=True)
class Forward:
    """storescu -> node, then node -> storescp; times in seconds."""

    ingest_wall_s: float  # storescu into the node, exec to exit
    send_s: float  # the node's send_delivered "seconds"
    wall_s: float  # storescu exit -> last file at storescp
    settle_s: float  # storescu exit -> series_completed
    route_s: float  # series_completed -> series_routed
    pickup_s: float  # series_routed -> the send started
    tail_s: float  # send_delivered logged -> ... (negative: last file came first)
    expected: int
    stored_in_node: int
    received: int
    sent_by_node: int
    node_cpu_s: float  # the node's CPU from storescu's exit to send_delivered
    node_peak_rss_bytes: int
    sender_rc: int

    @property
    def ok(self) -> bool:
        return (
            self.sender_rc == 0
            and self.received == self.expected
            and self.sent_by_node == self.expected
        )


def baseline(data: DataSet, run_dir: Path, *, timeout_s: float) -> Baseline:
    """storescu (TCP_NODELAY=1) sends ``data`` to a fresh storescp (TCP_NODELAY=1)."""
    run_dir.mkdir(parents=True)
    try:
        with StorescpReceiver(run_dir) as storescp:
            sent = send(
                data.folder, storescp.ae_title, storescp.port, tcp_nodelay=True, timeout_s=timeout_s
            )
            seen = arrivals.wait_for_files(storescp.output_dir, data.count, timeout_s=10.0)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()
    return Baseline(sent.wall_s, sent.returncode, data.count, seen.count, sent.cpu_s)


def node_forward(
    data: DataSet,
    run_dir: Path,
    *,
    settle_s: float,
    timeout_s: float,
    profiler: Attacher | None = None,
) -> Forward:
    """Send ``data`` into a node whose rule forwards it to a fresh storescp; time that.

    ``profiler`` attaches once storescu has finished (inside the settle wait) and
    detaches before the node stops.
    """
    run_dir.mkdir(parents=True)
    try:
        with StorescpReceiver(run_dir / "archive") as storescp:
            node = _forwarding_node(run_dir / "node", storescp, settle_s)
            try:
                node.start(timeout=_NODE_START_TIMEOUT_S)
                return _measure(node, storescp, data, timeout_s, profiler)
            finally:
                try:
                    if profiler is not None:
                        profiler.detach()  # before the node stops: see Attacher
                finally:
                    node.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()


def _forwarding_node(workdir: Path, storescp: StorescpReceiver, settle_s: float) -> NodeProcess:
    rules = workdir / "rules"
    rules.mkdir(parents=True)
    (rules / "forward.yaml").write_text(yaml.safe_dump(FORWARD_RULE), encoding="utf-8")
    archive = {"ae_title": storescp.ae_title, "host": "127.0.0.1", "port": storescp.port}
    return NodeProcess(
        workdir,
        {
            "destinations": {"archive": archive},
            "completion": {"settle_seconds": settle_s},
        },
    )


def _measure(
    node: NodeProcess,
    storescp: StorescpReceiver,
    data: DataSet,
    timeout_s: float,
    profiler: Attacher | None,
) -> Forward:
    process = psutil.Process(node.process.pid)
    sent = send(data.folder, NODE_AE, node.port, tcp_nodelay=True, timeout_s=timeout_s)
    acked_at = time.time()
    cpu_before = cpu_s(process)
    if profiler is not None:
        profiler.attach(process.pid)
    if sent.returncode != 0:
        raise RuntimeError(f"storescu into the node failed: {sent.log_tail[-500:]}")
    events = nodelog.wait_for_events(
        node.log_path,
        lambda evs: bool(nodelog.named(evs, "send_delivered")),
        failed=_send_failed,
        timeout_s=timeout_s,
        what="send_delivered in the node's log",
    )
    cpu_after = cpu_s(process)
    seen = arrivals.wait_for_files(storescp.output_dir, data.count, timeout_s=10.0)
    peak = peak_rss(process)
    completed = nodelog.named(events, "series_completed")[-1]
    routed = nodelog.named(events, "series_routed")[-1]
    delivered = nodelog.named(events, "send_delivered")[-1]
    send_started = delivered.at - float(delivered["seconds"])
    return Forward(
        ingest_wall_s=sent.wall_s,
        send_s=float(delivered["seconds"]),
        wall_s=seen.last_at - acked_at,
        settle_s=completed.at - acked_at,
        route_s=routed.at - completed.at,
        pickup_s=send_started - routed.at,
        tail_s=seen.last_at - delivered.at,
        expected=data.count,
        stored_in_node=int(completed["instance_count"]),
        received=seen.count,
        sent_by_node=int(delivered["sent"]),
        node_cpu_s=cpu_after - cpu_before,
        node_peak_rss_bytes=peak,
        sender_rc=sent.returncode,
    )


def _send_failed(events: list[nodelog.Event]) -> str | None:
    for name in ("send_failed", "send_retry_scheduled", "series_unrouted"):
        found = nodelog.named(events, name)
        if found:
            return f"{name}: {found[-1].fields.get('reason') or dict(found[-1].fields)}"
    return None
