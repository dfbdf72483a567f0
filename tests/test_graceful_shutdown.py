"""SIGTERM during a transfer: the node stops within a bounded time and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
import pytest

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool
from dicomnode.testing.dcmtk import parse_storescu_log
from dicomnode.testing.hostile import echo_problem, stuck_report
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until


@pytest.mark.slow
def test_sigterm_mid_transfer_keeps_every_acknowledged_instance(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=300, rows=128, columns=128))
    node = node_process().start()
    index = Index(node.config.database_url)
    log_path = tmp_path / "storescu.log"
    with log_path.open("w") as log:
        sender = subprocess.Popen(
            ["/usr/bin/storescu", "-d", "-aec", "DICOMNODE", "127.0.0.1", str(node.port),
             *map(str, series.paths)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        try:
            poll_until(lambda: index.count_instances() >= 50, timeout=60, what="50 instances")
            stopping = time.monotonic()
            node.process.popen.send_signal(signal.SIGTERM)
            exit_code = node.process.popen.wait(timeout=60)
            stop_seconds = time.monotonic() - stopping
            sender.wait(timeout=60)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
    node.process.stop()
    assert exit_code == 0
    assert stop_seconds < 30, "a graceful stop is bounded"
    assert "node_stopping" in node.logs() and "node_stopped" in node.logs()

    acknowledged = {
        a.sop_instance_uid for a in parse_storescu_log(log_path.read_text()) if a.acknowledged
    }
    assert acknowledged, "storescu saw acknowledgements before the stop"
    node.start()
    stored = {
        row.sop_instance_uid: row.spool_name
        for s in index.list_series()
        for row in index.instances_of(s.id)
    }
    spool = Spool(node.config.spool_path)
    for uid in acknowledged:
        assert uid in stored, "an acknowledged instance was lost"
        assert pydicom.dcmread(spool.path(stored[uid])).SOPInstanceUID == uid
    assert set(spool.names()) == index.spool_names()
    index.close()


def test_sighups_one_after_another_never_wedge_the_node_and_sigterm_still_stops_it(
    node_process: Callable[..., NodeProcess],
) -> None:
    """A handler that set a threading.Event could run while the main thread held that
    event's lock (going back to wait after a reload) and hang the node for good: SIGTERM
    was then answered only by SIGKILL. Each SIGHUP here lands just as the last reload ends."""
    node = node_process().start()
    for sent in range(1, 41):
        node.process.popen.send_signal(signal.SIGHUP)
        poll_until(partial(_reloaded, node, sent), timeout=10, what=f"reload {sent}")
    node.process.popen.send_signal(signal.SIGTERM)

    assert node.process.wait(timeout=30) == 0
    assert '"node_stopped"' in node.process.log_text()


def test_sigusr1_prints_every_threads_stack_and_the_node_keeps_serving(
    node_process: Callable[..., NodeProcess],
) -> None:
    """The on-call operator's question for a node that answers nothing (docs/logs.md)."""
    node = node_process().start()
    first = stuck_report(node)
    second = stuck_report(node)
    for report in (first, second):
        assert "most recent call first" in report
        assert "dicomnode/node.py" in report  # the main thread, waiting for signals
        assert "dicomnode/pipeline/worker.py" in report
    assert echo_problem(node.port) is None
    node.process.popen.send_signal(signal.SIGTERM)
    assert node.process.wait(timeout=30) == 0


def _reloaded(node: NodeProcess, times: int) -> bool:
    return node.process.log_text().count('"node_reloading"') >= times
