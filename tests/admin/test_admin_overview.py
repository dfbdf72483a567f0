"""/api/overview: what the dashboard shows first, from a running node."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dicomnode import __version__
from dicomnode.node import Node
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_the_overview_names_the_node_its_readiness_and_counts_by_state(
    node_factory: Callable[..., Node],
    write_rules: Callable[..., Path],
    make_destination: Callable[..., dict[str, Any]],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    routed: Callable[[Node, str], None],
) -> None:
    write_rules("- name: ct\n  match: {Modality: CT}\n  forward_to: [gone]\n")
    node = node_factory(destinations={"gone": make_destination("GONE", 1, max_age_seconds=0.5)})
    started = datetime.now(UTC)
    client = client_for(node, dicom_port=lambda: node.scp.port, started_at=started)

    empty = client.get("/api/overview").json()
    assert empty["node"] == {
        "ae_title": "DICOMNODE",
        "dicom_port": node.scp.port,
        "dicom_tls_port": None,  # no node.tls
        "version": __version__,
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "node_id": node.config.node_id,
        "roles": ["receive", "route", "pipeline", "send"],
    }
    assert empty["readiness"]["ready"] is True
    assert empty["rules_version"] == node.rules.current.version
    assert empty["rules_count"] == 1
    assert empty["series"] == {} and empty["sends"] == {} and empty["pipeline_jobs"] == {}

    phantom = send_phantom(node, slices=3)
    routed(node, phantom.series_instance_uid)
    node.outbox.wake("gone")

    def counts() -> dict[str, Any]:
        body: dict[str, Any] = client.get("/api/overview").json()
        return body

    poll_until(lambda: counts()["sends"] == {"failed": 1}, timeout=30, what="the send to fail")
    assert counts()["series"] == {"complete": 1}
    assert counts()["pipeline_jobs"] == {}


def test_the_overview_needs_the_token(node: Node, client_for: Callable[..., TestClient]) -> None:
    client = client_for(node)
    assert client.get("/api/overview", headers={"Authorization": ""}).status_code == 401
    assert client.get("/api/overview", headers={"Authorization": "Bearer no"}).status_code == 401


def test_the_web_page_and_its_assets_are_served_without_the_token(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    client.headers.pop("Authorization")
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "ui/"
    page = client.get("/ui/")
    assert page.status_code == 200
    assert '<script type="module" src="assets/app.js">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/ui/assets/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert client.get("/ui/assets/missing.js").status_code == 404
    # the page is not part of the API document (schemathesis tests only the API)
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(path == "/" or path.startswith("/ui") for path in paths)
    assert "/api/overview" in paths and "/api/rules/check" in paths
