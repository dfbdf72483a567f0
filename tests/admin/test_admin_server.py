"""AdminServer: the app served over real HTTP on its own thread, started and stopped."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dicomnode.admin import AdminAccess, AdminServer, AdminServices, create_app
from dicomnode.errors import ConfigError
from dicomnode.node import Node
from dicomnode.testing.ports import LOOPBACK, port_accepts


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)  # noqa: S310 - a loopback http URL built here
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server(
    node: Node, services_for: Callable[..., AdminServices], access: AdminAccess
) -> Iterator[AdminServer]:
    server = AdminServer(create_app(services_for(node), access), LOOPBACK, 0)
    server.start()
    yield server
    server.stop()


def test_the_api_answers_over_http_and_stops_cleanly(server: AdminServer, token: str) -> None:
    base = f"http://{LOOPBACK}:{server.port}"
    assert server.port != 0
    assert get(f"{base}/healthz") == (200, {"status": "ok"})
    assert get(f"{base}/api/series")[0] == 401
    assert get(f"{base}/api/series", token) == (200, [])
    server.stop()
    assert not port_accepts(server.port)


def test_a_port_in_use_is_a_clear_error_at_start(
    node: Node, services_for: Callable[..., AdminServices]
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AdminServer(create_app(services_for(node), None), LOOPBACK, port)
        with pytest.raises(ConfigError, match=rf"admin: cannot listen on 127\.0\.0\.1:{port}"):
            server.start()
