"""Association slots stay with real senders: half-open, garbage and malformed peers are
refused early, each refusal leaves one event and a count (issue 11, items 4 and 8).

Every test runs on both receiving paths (the adapted one and pynetdicom's stock one),
against a node in its own process. Attackers connect from other loopback addresses
(127.0.0.2, ...) than the real sender (127.0.0.1): the cap is per source address.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing import pdus
from dicomnode.testing.hostile import (
    PATHS,
    connect,
    echo_succeeds,
    events,
    metric,
    refusals,
    start_node,
)
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.process import poll_until

REQUEST_TIMEOUT = 1.0
MAX_PENDING = 3


@pytest.fixture(params=PATHS)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NodeProcess]:
    settings = {
        "node": {
            "association_request_timeout_seconds": REQUEST_TIMEOUT,
            "max_pending_per_host": MAX_PENDING,
            "max_associations": 3,
        },
        "callers": ["MODALITY", "STORESCU", "ECHOSCU", "HOSTILE"],
    }
    process = start_node(tmp_path / "node", request.param, settings)
    yield process
    process.stop()


def echo(port: int, calling: str = "ECHOSCU", called: str = NODE_AE) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=called)


def refused_once(node: NodeProcess, reason: str, count: int = 1) -> None:
    """``count`` events and ``count`` in dicomnode_refusals_total for ``reason``."""
    poll_until(lambda: len(refusals(node, reason)) >= count, timeout=15, what=f"{reason} events")
    found = refusals(node, reason)
    assert len(found) == count, found
    assert all("peer_host" in record and "peer_ae" in record for record in found)
    assert metric(node, "dicomnode_refusals_total", {"reason": reason}) == count


MALFORMED = {
    "even context ID": [pdus.application_context(), pdus.presentation_context(2)],
    "duplicate context IDs": [
        pdus.application_context(),
        pdus.presentation_context(1),
        pdus.presentation_context(1),
    ],
    "no abstract syntax": [pdus.application_context(), pdus.presentation_context(1, None)],
    "no transfer syntax": [
        pdus.application_context(),
        pdus.presentation_context(1, pdus.CT_IMAGE_STORAGE, ()),
    ],
    "no application context": [pdus.presentation_context(1)],
    "item longer than the PDU": [
        pdus.application_context(),
        pdus.item(0x20, b"\x01\0\0\0", length=500),
    ],
}


def test_malformed_requests_are_refused_at_once_and_leave_one_event_each(
    node: NodeProcess,
) -> None:
    for name, items in MALFORMED.items():
        with connect(node.port, "127.0.0.2") as sock:
            sock.sendall(pdus.associate_rq(items=[*items, pdus.user_information()]))
            answer = pdus.read_pdu(sock)
            assert answer is not None and (answer.is_rejection or answer.is_abort), name
            assert pdus.closed_by_peer(sock), name
    assert echo_succeeds(node.port)
    refused_once(node, "malformed_request", len(MALFORMED))
    assert "Traceback" not in node.logs()


def test_garbage_before_a_request_is_refused(node: NodeProcess) -> None:
    with connect(node.port, "127.0.0.2") as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer = pdus.read_pdu(sock)
        assert answer is not None and answer.is_abort
    refused_once(node, "malformed_request")


def test_a_wrong_called_ae_title_and_a_stranger_are_rejected_with_one_event_each(
    node: NodeProcess,
) -> None:
    assert echo(node.port, called="NOTUS").is_rejected
    assert echo(node.port, calling="STRANGER").is_rejected
    refused_once(node, "called_ae_title")
    refused_once(node, "caller_not_allowed")
    (called,) = refusals(node, "called_ae_title")
    assert (called["event"], called["peer_ae"], called["peer_host"]) == (
        "association_rejected",
        "ECHOSCU",
        "127.0.0.1",
    )


def test_the_association_limit_counts_established_associations_only(
    node: NodeProcess,
) -> None:
    # Half-open connections from two addresses: none of them holds a slot.
    stalled = [connect(node.port, f"127.0.0.{n}") for n in (2, 3) for _ in range(MAX_PENDING)]
    try:
        held = [echo(node.port) for _ in range(3)]
        assert all(assoc.is_established for assoc in held)
        fourth = echo(node.port)
        assert fourth.is_rejected
        for assoc in held:
            assoc.release()
    finally:
        for sock in stalled:
            sock.close()
    refused_once(node, "association_limit")
    assert echo_succeeds(node.port)


def test_a_connection_that_does_not_negotiate_is_closed_after_the_request_timeout(
    node: NodeProcess,
) -> None:
    with connect(node.port, "127.0.0.2") as sock:
        sock.sendall(b"\x01\x00\x00\x00")  # half an A-ASSOCIATE-RQ header, then silence
        started = time.monotonic()
        assert pdus.closed_by_peer(sock, timeout=20)
        assert time.monotonic() - started < 15  # well before the 30 s ACSE timeout
    refused_once(node, "negotiation_timeout")


def test_connections_past_the_pending_cap_are_closed_at_once(node: NodeProcess) -> None:
    stalled = [connect(node.port, "127.0.0.2") for _ in range(MAX_PENDING)]
    try:
        with connect(node.port, "127.0.0.2") as extra:
            assert pdus.closed_by_peer(extra, timeout=REQUEST_TIMEOUT / 2)
        # Another address is not affected.
        assert echo_succeeds(node.port)
    finally:
        for sock in stalled:
            sock.close()
    assert len(refusals(node, "too_many_pending")) >= 1
    assert metric(node, "dicomnode_refusals_total", {"reason": "too_many_pending"}) >= 1


def _attack(port: int, stop: threading.Event, budget_seconds: float) -> Callable[[], None]:
    """Stall half-open connections and loop connect-garbage-disconnect, bounded."""

    def stall(source: str) -> None:
        deadline = time.monotonic() + budget_seconds
        for _ in range(200):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with connect(port, source, timeout=5) as sock:
                    sock.sendall(b"\x01\x00")
                    pdus.closed_by_peer(sock, timeout=30)
            except OSError:
                time.sleep(0.05)

    def garbage(source: str) -> None:
        deadline = time.monotonic() + budget_seconds
        for _ in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with connect(port, source, timeout=5) as sock:
                    sock.sendall(os.urandom(64))
            except OSError:
                time.sleep(0.01)

    threads = [
        *(threading.Thread(target=stall, args=(f"127.0.1.{n}",)) for n in range(1, 9)),
        *(threading.Thread(target=garbage, args=(f"127.0.2.{n}",)) for n in range(1, 3)),
    ]
    for thread in threads:
        thread.start()

    def join() -> None:
        stop.set()
        for thread in threads:
            thread.join(60)

    return join


def test_a_real_sender_keeps_storing_while_attackers_stall_and_spray(
    node: NodeProcess, tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=40, rows=32, columns=32))
    stop = threading.Event()
    join = _attack(node.port, stop, budget_seconds=240)
    results = []
    try:
        poll_until(
            lambda: bool(refusals(node, "malformed_request")),
            timeout=30,
            what="the attack under way",
        )
        for path in series.paths:
            sent = subprocess.run(
                ["/usr/bin/storescu", "-aet", "STORESCU", "-aec", NODE_AE, "-to", "20",
                 "127.0.0.1", str(node.port), str(path)],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "TCP_NODELAY": "1"},
            )  # fmt: skip
            results.append(sent.returncode == 0)
    finally:
        join()
    assert sum(results) >= 0.95 * len(results), f"{sum(results)} of {len(results)} stored"
    assert not events(node, "node_stopped")  # still serving


def test_a_sender_opening_its_parallel_associations_in_one_burst_gets_them_all(
    tmp_path: Path,
) -> None:
    """The per-address cap is for stalled connections, not for a PACS's parallel senders.

    With the defaults, eight associations opened from one address at the same instant
    (a multi-threaded PACS starting a study) are all accepted and served.
    """
    node = start_node(tmp_path / "node", "adapted", {"callers": ["ECHOSCU"]})
    try:
        start = threading.Barrier(8)
        answers: list[int | None] = []
        lock = threading.Lock()

        def one() -> None:
            start.wait(timeout=30)
            assoc = echo(node.port)
            status = None
            if assoc.is_established:
                status = int(assoc.send_c_echo().Status)
                assoc.release()
            with lock:
                answers.append(status)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [0] * 8
        assert refusals(node, "too_many_pending") == []
    finally:
        node.stop()
