"""Fixtures for the admin API: a real running node, its services, and an HTTP client.

``services_of`` builds AdminServices from a Node exactly as the composition root does,
so the app under test serves the same parts a deployed node serves.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import secrets
import ssl
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dicomnode.admin import AdminAccess, AdminServices, DiskWatermark, create_app, tcp_listening
from dicomnode.admin.tokens import single
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import ScuSettings, SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

TOKEN = secrets.token_urlsafe(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers (lowercase names) and the body, parsed if JSON."""

    status: int
    headers: dict[str, str]
    body: Any


def call(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """One request to a real admin server on loopback, with exactly the headers given
    (a ``Host`` among them replaces the default); an iterable body is sent chunked."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        connection.request(
            method,
            path,
            body=body,
            headers=headers or {},
            encode_chunked=body is not None and not isinstance(body, bytes),
        )
        response = connection.getresponse()
        raw = response.read()
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    parsed: Any = raw.decode("utf-8", "replace")
    if answer_headers.get("content-type", "").startswith("application/json"):
        parsed = json.loads(raw)
    return Answer(response.status, answer_headers, parsed)


def services_of(node: Node, **overrides: Any) -> AdminServices:
    """What node.py wires, from a started Node (the disk limit off unless overridden)."""
    config = node.config
    services = AdminServices(
        database=node.database,
        index=node.index,
        spool=node.spool,
        jobs=node.workers.queue,
        sends=node.outbox.queue,
        rules=node.rules,
        decisions=node.router.decisions,
        destinations=config.destinations,
        pipelines=tuple(node.pipelines),
        calling_ae=config.node.ae_title,
        scp_listening=lambda: tcp_listening(config.node.host, node.scp.port),
        disk=DiskWatermark(config.spool_path, high_water_percent=100.0),
        wake_sends=node.outbox.wake,
        wake_jobs=node.workers.wake,
        wake_routing=node.router.notify,
        node_id=node.lease.owner,
        roles=tuple(config.node.roles),
        lease_seconds=node.lease.seconds,
        provenance=lambda name: node.engine.provenance(name, None),
    )
    return dataclasses.replace(services, **overrides)


@pytest.fixture
def http_call() -> Callable[..., Answer]:
    """``call``: one real HTTP(S) request to an admin server on loopback."""
    return call


@pytest.fixture
def services_for() -> Callable[..., AdminServices]:
    """``services_of`` as a fixture, for tests that build the app themselves."""
    return services_of


@pytest.fixture
def token() -> str:
    """The admin token the test apps are built with."""
    return TOKEN


@pytest.fixture
def access(token: str) -> AdminAccess:
    """The access rules of the test apps: one admin token, the default hosts and limits."""
    return AdminAccess(tokens=single(token))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The folder make_config points the node's rules_dir at."""
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def write_rules(rules_dir: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "rules.yaml") -> Path:
        path = rules_dir / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """An authenticated TestClient on an app over ``node`` (closed at the end).

    Its requests name ``localhost`` as their Host (the test client's own ``testserver``
    is not a name the node answers to).
    """
    clients: list[TestClient] = []

    def make(
        node: Node, token: str | None = TOKEN, metrics_public: bool = False, **overrides: Any
    ) -> TestClient:
        access = AdminAccess(tokens=single(token)) if token is not None else None
        app = create_app(services_of(node, **overrides), access, metrics_public=metrics_public)
        client = TestClient(
            app, base_url="http://localhost", headers=AUTH if token is not None else {}
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def send_phantom(tmp_path: Path) -> Callable[..., Any]:
    """Write a small CT phantom series and C-STORE it to a node; returns the phantom."""
    made = 0

    def send(
        node: Node,
        description: str = "CT CHEST",
        slices: int = 6,
        calling_ae: str = "SCANNER1",
        **spec: Any,
    ) -> Any:
        nonlocal made
        made += 1
        phantom = write_ct_phantom(
            tmp_path / f"phantom{made}",
            CTPhantomSpec(
                **{
                    "slices": slices,
                    "rows": 32,
                    "columns": 32,
                    "seed": made,
                    "series_description": description,
                    "series_number": made,
                    **spec,
                }
            ),
        )
        files = [f for f in map(inspect_file, phantom.paths) if isinstance(f, SendableFile)]
        results = send_files(
            files,
            parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"),
            ScuSettings(calling_ae=calling_ae),
        )
        assert all(r.ok for r in results), [r.note for r in results if not r.ok]
        return phantom

    return send


@pytest.fixture
def routed() -> Callable[[Node, str], None]:
    """Wait until the series with ``uid`` is complete and routed."""

    def wait(node: Node, uid: str) -> None:
        def done() -> bool:
            series = node.index.find_series(uid)
            return series is not None and bool(node.router.decisions(series.id))

        poll_until(done, timeout=60, what=f"series {uid} routed")

    return wait


@pytest.fixture
def pipeline_settings() -> Callable[[str], dict[str, Any]]:
    """Node settings for a pipeline ``bone`` whose model is one of dicomnode.testing.models."""

    def settings(function: str, **options: Any) -> dict[str, Any]:
        model = {"kind": "python", "function": f"dicomnode.testing.models:{function}"}
        return {
            "models": {"bone-model": {**model, "options": options}},
            "pipelines": {"bone": bone_pipeline("bone-model")},
        }

    return settings


def destination(ae: str, port: int, **retry: Any) -> dict[str, Any]:
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "retry": {**FAST_RETRY, **retry}}


@pytest.fixture
def make_destination() -> Callable[..., dict[str, Any]]:
    return destination


@pytest.fixture
def pipeline_run(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
    pipeline_settings: Callable[..., dict[str, Any]],
) -> tuple[Node, TestClient, Any]:
    """A CT series through the rules, the pipeline and the outbox: SEG and SR delivered."""
    write_rules(
        """
        - name: bone
          match: {Modality: CT}
          pipeline: bone
          send_to: [pacs]
        """
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": make_destination("PACS", pacs.port)},
            **pipeline_settings("slow_threshold", seconds=0.0, threshold=300.0),
        )
        # 6 mm pixels: the 64x64 slices cover the whole body, bone included (SEG and SR).
        series = send_phantom(node, "CT BODY", slices=8, rows=64, columns=64, pixel_spacing_mm=6.0)
        pacs.wait_for_files(2, timeout=60)
        poll_until(
            lambda: len(node.outbox.queue.list_sends("done")) == 2, timeout=30, what="2 sends"
        )
    return node, client_for(node), series
