"""Quick acknowledgements: set when a connection opens and after every read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from dicomnode.dicom import sockets, tcp
from dicomnode.dicom.adapt import direct

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only"
)


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            yield client, accepted
        finally:
            client.close()
            accepted.close()


def test_quick_ack_switches_the_mode_on(connected: tuple[socket.socket, socket.socket]) -> None:
    _client, accepted = connected
    tcp.quick_ack(accepted)
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_quick_ack_on_a_closed_socket_is_quiet() -> None:
    closed = socket.socket()
    closed.close()
    tcp.quick_ack(closed)  # the read that follows reports the closed socket


def test_every_read_asks_for_it_again(
    connected: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, accepted = connected
    asked: list[socket.socket] = []
    monkeypatch.setattr(tcp, "quick_ack", asked.append)
    reads: list[int] = []

    class _Counting:
        """The accepted socket, counting the reads the DUL makes of it."""

        def recv(self, size: int) -> bytes:
            reads.append(size)
            return accepted.recv(min(size, 4))  # a few bytes per read: several reads

        def recv_into(self, view: memoryview) -> int:
            reads.append(len(view))
            return accepted.recv_into(view[:4])

    client.sendall(b"0123456789")
    counting, inbox = _Counting(), bytearray()
    assert direct._read_ahead(counting, inbox, 6)
    assert bytes(direct._take(counting, inbox, 10)) == b"0123456789"
    assert len(reads) >= 3
    assert asked == [counting] * len(reads)  # re-armed after each read


def test_a_new_connection_is_tuned(
    connected: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    _client, accepted = connected
    asked: list[Any] = []
    monkeypatch.setattr(tcp, "quick_ack", asked.append)
    # What sockets.tune reads of pynetdicom's Event: event.assoc.dul.socket.socket.
    event = SimpleNamespace(
        assoc=SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=accepted)))
    )
    sockets.tune(event, 5.0)  # type: ignore[arg-type]  # a stand-in
    assert asked == [accepted]
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert accepted.gettimeout() == 5.0
