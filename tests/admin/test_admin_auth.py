"""The token rules: probes are public, everything else needs the bearer token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicomnode.admin import check_admin_security, read_token
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
def test_no_token_is_401_with_a_bearer_challenge_and_a_wrong_one_is_403(
    node: Node, client_for: Callable[..., TestClient], path: str, token: str
) -> None:
    client = client_for(node)
    missing = client.get(path, headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
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
    assert response.status_code == 403
    assert not (rules_dir / "x.yaml").exists()
    assert client.get("/api/audit").json() == []


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
    check_admin_security(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "admin.example.org", ""])
def test_a_reachable_address_without_a_token_refuses_to_start(host: str, token: str) -> None:
    with pytest.raises(ConfigError, match=r"admin\.token or admin\.token_file"):
        check_admin_security(host, None)
    check_admin_security(host, token)


def test_the_token_is_read_from_a_file_without_its_newline(tmp_path: Path, token: str) -> None:
    path = tmp_path / "token"
    path.write_text(f"{token}\n")
    assert read_token(None, path) == token
    assert read_token(" inline ", None) == "inline"
    assert read_token(None, None) is None


@pytest.mark.parametrize(
    ("token", "file_text", "message"),
    [
        ("x", "y", "not both"),
        (None, "  \n", "is empty"),
        ("  ", None, "is empty"),
        (None, "missing", "cannot read"),
    ],
)
def test_a_bad_token_setting_is_a_config_error(
    tmp_path: Path, token: str | None, file_text: str | None, message: str
) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "token"
        if file_text != "missing":
            path.write_text(file_text)
    with pytest.raises(ConfigError, match=message):
        read_token(token, path)
