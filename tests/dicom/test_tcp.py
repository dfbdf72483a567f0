"""Quick acknowledgements: set when a connection opens and after every read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from dicomnode.dicom import pdata, sockets, tcp

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
    client.sendall(b"0123456789")

    class _AssociationSocket:
        socket = accepted

    data = pdata._recv(_AssociationSocket(), 6)  # type: ignore[arg-type]  # a stand-in
    data += pdata._recv(_AssociationSocket(), 4)  # type: ignore[arg-type]
    assert bytes(data) == b"0123456789"
    assert asked == [accepted, accepted]


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
