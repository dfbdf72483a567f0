"""The token rules: probes are public, everything else needs a bearer token.

Roles, token files and failed authentications: test_admin_hardening.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicomnode.admin import check_admin_security
from dicomnode.admin.tokens import Tokens, single
from dicomnode.errors import ConfigError
from dicomnode.node import Node

PROTECTED = ["/api/series", "/api/jobs", "/api/destinations", "/api/rules", "/api/audit"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_probes_and_the_api_description_need_no_token(
    node: Node, client_for: Callable[..., TestClient], path: str
) -> None:
    client = client_for(node)
    response = client.get(path, headers={"Authorization": ""})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", [*PROTECTED, "/metrics"])
def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge(
    node: Node, client_for: Callable[..., TestClient], path: str, token: str
) -> None:
    client = client_for(node)
    missing = client.get(path, headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    basic = client.get(path, headers={"Authorization": f"Basic {token}"})
    assert basic.status_code == 401
    params = {"echo": "false"} if path == "/api/destinations" else {}
    assert client.get(path, params=params).status_code == 200


def test_a_write_without_the_token_changes_nothing(
    node: Node, client_for: Callable[..., TestClient], rules_dir: Path
) -> None:
    client = client_for(node)
    response = client.put(
        "/api/rules",
        json={"name": "x.yaml", "content": "[]\n"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 401
    assert not (rules_dir / "x.yaml").exists()
    assert [e["action"] for e in client.get("/api/audit").json()] == ["auth.failed"]


def test_metrics_can_be_made_public_for_scrapers_that_send_no_token(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node, metrics_public=True)
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 200
    assert client.get("/api/series", headers={"Authorization": ""}).status_code == 401


def test_without_a_token_on_loopback_the_api_is_open(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node, token=None)
    assert client.get("/api/series").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    check_admin_security(host, Tokens())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "admin.example.org", ""])
def test_a_reachable_address_without_a_token_refuses_to_start(host: str, token: str) -> None:
    with pytest.raises(ConfigError, match=r"no admin token is configured: set admin\.tokens"):
        check_admin_security(host, Tokens())
    check_admin_security(host, single(token))
