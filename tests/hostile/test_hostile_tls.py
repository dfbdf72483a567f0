"""The DICOM-TLS listener against peers that fail, refuse or stall the handshake (issue 12).

A client certificate from another CA, an expired one, none where one is required, and
TLS 1.1 are each refused during the handshake, with one ``connection_refused`` event
(reason ``tls_handshake``, a short detail) and one count; a plaintext client on the TLS
port and a TLS client on the plain port are dropped at once; ten unfinished handshakes
hold no slot a real sender needs and are closed at the request time-out.

The node runs in its own process on the adapted receiving path only: pynetdicom's stock
path cannot read TLS sockets, and a node on it refuses ``node.tls`` at start (tested).
Attackers connect from other loopback addresses (127.0.0.2, ...) than the real sender.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dicomnode.dicom import adapt
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing import pdus
from dicomnode.testing.hostile import (
    connect,
    echo_succeeds,
    events,
    metric,
    refusals,
    start_node,
)
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescu import storescu
from dicomnode.testing.storescu_log import acknowledged_uids, parse_storescu_log
from dicomnode.testing.tls_clients import (
    client_context,
    client_hello,
    dcmtk_tls_args,
    legacy_context,
    server_certificate,
)

# Long enough that a store over TLS (storescu's start, handshake, five C-STOREs) ends
# well before it even on a loaded CI machine: the stalled peers must still be open then.
REQUEST_TIMEOUT = 5.0
STALLED = 10


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: Issued
    client: Issued  # from the node's CA: a legitimate sender
    stranger: Issued  # the same subject, issued by another CA
    expired: Issued  # the node's CA, expired yesterday


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other-pki", name="another CA")
    return Pki(
        ca=ca,
        server=ca.issue("dicomnode.test", stem="server"),
        client=ca.issue("modality", stem="client"),
        stranger=other.issue("modality", stem="stranger"),
        expired=ca.issue("modality", expired=True, stem="expired"),
    )


def tls_settings(pki: Pki, tls_port: int) -> dict[str, Any]:
    return {
        "node": {
            "association_request_timeout_seconds": REQUEST_TIMEOUT,
            "tls": {
                "port": tls_port,
                "certificate": str(pki.server.certificate),
                "private_key": str(pki.server.private_key),
                "ca_certificates": str(pki.ca.certificate),
            },
        },
    }


def start_tls_node(workdir: Path, settings: dict[str, Any]) -> NodeProcess:
    """A node process once both listeners accept (``start`` waits for the plain one)."""
    process = start_node(workdir, "adapted", settings)
    wait_for_port(settings["node"]["tls"]["port"], timeout=30)
    return process


@dataclass(frozen=True)
class TLSNode:
    process: NodeProcess
    tls_port: int

    @property
    def port(self) -> int:
        return self.process.port


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> Iterator[TLSNode]:
    tls_port = free_port()
    process = start_tls_node(tmp_path / "node", tls_settings(pki, tls_port))
    yield TLSNode(process, tls_port)
    process.stop()


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return list(
        write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=5, rows=16, columns=16)).paths
    )


def store_over_tls(
    port: int, paths: list[Path], pki: Pki, client: Issued | None
) -> subprocess.CompletedProcess[str]:
    return storescu(
        paths,
        ae_title=NODE_AE,
        port=port,
        calling_ae="MODALITY",
        propose="uncompressed",
        extra_args=dcmtk_tls_args(pki.ca.certificate, client),
        timeout=60,
    )


def acknowledged(result: subprocess.CompletedProcess[str]) -> int:
    return len(acknowledged_uids(parse_storescu_log(result.stdout)))


def refused_once(node: NodeProcess, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """``count`` refusal events for ``reason`` (each once), and as many counted."""
    poll_until(lambda: len(refusals(node, reason)) >= count, timeout=15, what=f"{reason} events")
    found = refusals(node, reason)
    assert len(found) == count, found
    assert metric(node, "dicomnode_refusals_total", {"reason": reason}) == count
    return found


def refusal_events(node: NodeProcess) -> list[dict[str, Any]]:
    return [e for e in events(node) if e["event"] in {"connection_refused", "association_rejected"}]


# -- refused handshakes ---------------------------------------------------------------

STORESCU_REFUSALS = {
    "client certificate from another CA": (
        "stranger",
        "certificate verify failed: unable to get local issuer certificate",
    ),
    "expired client certificate": ("expired", "certificate verify failed: certificate has expired"),
    "no client certificate where one is required": (None, "peer did not return a certificate"),
}


@pytest.mark.parametrize("case", sorted(STORESCU_REFUSALS))
def test_a_sender_the_node_cannot_verify_is_refused_in_the_handshake(
    node: TLSNode, pki: Pki, series: list[Path], case: str
) -> None:
    certificate, detail = STORESCU_REFUSALS[case]
    client = None if certificate is None else getattr(pki, certificate)

    refused = store_over_tls(node.tls_port, series, pki, client)

    assert refused.returncode != 0 and acknowledged(refused) == 0, refused.stdout[-2000:]
    (event,) = refused_once(node.process, "tls_handshake")
    assert (event["event"], event["peer_host"], event["detail"]) == (
        "connection_refused",
        LOOPBACK,
        detail,
    )
    assert refusal_events(node.process) == [event]
    assert not events(node.process, "association_accepted")
    # The legitimate sender is served right after.
    served = store_over_tls(node.tls_port, series, pki, pki.client)
    assert served.returncode == 0 and acknowledged(served) == len(series), served.stdout[-2000:]
    assert "Traceback" not in node.process.logs()


def test_a_tls_1_1_client_is_refused_by_the_node(node: TLSNode) -> None:
    with (
        connect(node.tls_port, "127.0.0.2") as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        legacy_context(ssl.TLSVersion.TLSv1_1).wrap_socket(raw)

    if "NO_PROTOCOLS_AVAILABLE" in str(refused.value):
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.1 even at @SECLEVEL=0")
    # The client offered TLS 1.1 and the node answered with a protocol_version alert.
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(refused.value)
    (event,) = refused_once(node.process, "tls_handshake")
    assert (event["event"], event["peer_host"], event["detail"]) == (
        "connection_refused",
        "127.0.0.2",
        "unsupported protocol",
    )


# -- the wrong protocol on each port ----------------------------------------------------


def test_a_plaintext_client_on_the_tls_port_is_dropped_at_once(node: TLSNode) -> None:
    with connect(node.tls_port, "127.0.0.2") as sock:
        sock.sendall(pdus.associate_rq(calling=b"MODALITY"))
        assert pdus.read_pdu(sock) is None  # no DICOM answer: closed
    # Dropped by the handshake itself: a connection left to the request time-out would
    # be refused as ``negotiation_timeout`` instead.
    (event,) = refused_once(node.process, "tls_handshake")
    assert (event["event"], event["peer_host"], event["detail"]) == (
        "connection_refused",
        "127.0.0.2",
        "wrong version number",
    )
    assert refusal_events(node.process) == [event]


def test_a_tls_client_on_the_plain_port_is_dropped_at_once(
    node: TLSNode, pki: Pki, series: list[Path]
) -> None:
    with connect(node.port, "127.0.0.2") as raw, pytest.raises((ssl.SSLError, OSError)):
        client_context(pki.ca.certificate, pki.client).wrap_socket(raw)
    refused = store_over_tls(node.port, series, pki, pki.client)
    assert refused.returncode != 0 and acknowledged(refused) == 0

    found = refused_once(node.process, "tls_on_plain_port", count=2)
    assert [(e["event"], e["peer_host"]) for e in found] == [
        ("association_rejected", "127.0.0.2"),
        ("association_rejected", LOOPBACK),
    ]
    assert all("node.tls.port" in e["detail"] for e in found)
    assert refusal_events(node.process) == found


def test_a_port_probe_on_the_tls_port_is_no_refusal(
    node: TLSNode, pki: Pki, series: list[Path]
) -> None:
    # A load balancer's health check: connect, close before a byte. On the plain port it
    # leaves no trace; on the TLS port neither (it was once a failed handshake).
    for _ in range(3):
        connect(node.tls_port, "127.0.0.2").close()
    served = store_over_tls(node.tls_port, series, pki, pki.client)
    assert served.returncode == 0 and acknowledged(served) == len(series)
    assert refusal_events(node.process) == []
    assert metric(node.process, "dicomnode_refusals_total", {"reason": "tls_handshake"}) == 0


# -- unfinished handshakes --------------------------------------------------------------


def still_open(sock: socket.socket) -> bool:
    """Whether the node has not closed ``sock`` (nothing to read, no end of stream)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_the_node_serves_a_tls_sender_while_ten_handshakes_hang(
    node: TLSNode, pki: Pki, series: list[Path]
) -> None:
    hello = client_hello()
    # One stalled peer per source address (127.0.0.2..11): the node caps connections
    # still negotiating per address (node.max_pending_per_host, 8 by default), so ten
    # from one address would be partly refused at once, and from 127.0.0.1 they would
    # fill the legitimate sender's own allowance. Here each holds one pending connection.
    stalled = [connect(node.tls_port, f"127.0.0.{n}") for n in range(2, 2 + STALLED)]
    try:
        for number, sock in enumerate(stalled):
            if number % 2:
                sock.sendall(hello[: len(hello) // 2])  # half a ClientHello, then silence
        served = store_over_tls(node.tls_port, series, pki, pki.client)

        assert served.returncode == 0, served.stdout[-2000:]
        assert acknowledged(served) == len(series)
        assert all(map(still_open, stalled)), "a stalled handshake ended before the store"
        for sock in stalled:
            assert pdus.closed_by_peer(sock, timeout=REQUEST_TIMEOUT + 20)
    finally:
        for sock in stalled:
            sock.close()

    found = refused_once(node.process, "negotiation_timeout", count=STALLED)
    assert sorted(e["peer_host"] for e in found) == sorted(
        f"127.0.0.{n}" for n in range(2, 2 + STALLED)
    )
    assert all(e["event"] == "connection_refused" for e in found)
    assert all(e["detail"].endswith("its TLS handshake unfinished") for e in found)
    assert refusal_events(node.process) == found  # one event each: no tls_handshake twin
    assert "Traceback" not in node.process.logs()


def test_a_handshake_trickled_byte_by_byte_is_closed_at_the_request_timeout(
    node: TLSNode,
) -> None:
    # Each byte well within any per-read time-out: only a deadline on the whole
    # negotiation (the pending watchdog) ends it.
    hello = client_hello()
    pace = REQUEST_TIMEOUT / 25
    with connect(node.tls_port, "127.0.0.2") as sock:
        started = time.monotonic()
        try:
            for byte in hello[:-1]:
                sock.sendall(bytes([byte]))
                if not still_open(sock):
                    break
                time.sleep(pace)  # the attacker's pace, not a wait for a condition
        except OSError:
            pass  # reset by the node mid-trickle
        assert pdus.closed_by_peer(sock, timeout=REQUEST_TIMEOUT + 20)
        assert time.monotonic() - started < len(hello) * pace  # before the hello was sent
    (event,) = refused_once(node.process, "negotiation_timeout")
    assert event["detail"].endswith("its TLS handshake unfinished")
    assert refusal_events(node.process) == [event]


def test_sigterm_ends_a_node_whose_peers_stall_in_the_handshake_and_the_request(
    tmp_path: Path, pki: Pki
) -> None:
    # Time-outs far beyond the stop's wait: only closing these connections at stop ends
    # their threads (a TLS handshake runs on the thread the server's shutdown joins; an
    # unestablished association's abort waits for its reader).
    tls_port = free_port()
    settings = tls_settings(pki, tls_port)
    settings["node"]["association_request_timeout_seconds"] = 120.0
    settings["node"]["idle_timeout_seconds"] = 120.0
    node = start_tls_node(tmp_path / "node", settings)
    silent = connect(tls_port, "127.0.0.2")
    half_hello = connect(tls_port, "127.0.0.3")
    half_request = connect(node.port, "127.0.0.4")
    try:
        half_hello.sendall(client_hello()[:100])
        half_request.sendall(pdus.associate_rq()[:20])
        # Each listener accepts in order: once a later connection is served, these were
        # accepted, and the TLS ones are in their handshake.
        server_certificate(tls_port, pki.ca.certificate, pki.client)
        assert echo_succeeds(node.port)
        returncode = node.stop(timeout=30)
    finally:
        for sock in (silent, half_hello, half_request):
            sock.close()

    assert returncode == 0, "the node did not stop by itself within 30 s"
    assert events(node, "node_stopped")
    assert not refusal_events(node)  # stopping is no refusal of these peers


# -- configuration ----------------------------------------------------------------------


def test_the_stock_receiving_path_refuses_node_tls_at_start(tmp_path: Path, pki: Pki) -> None:
    config = NodeProcess(tmp_path / "node", tls_settings(pki, free_port())).config_path
    env = {**os.environ, adapt.STOCK_VARIABLE: "1"}

    served = subprocess.run(
        [sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert served.returncode != 0
    assert "node.tls needs the node's pynetdicom adaptations" in served.stderr + served.stdout
    assert adapt.STOCK_VARIABLE in served.stderr + served.stdout
