"""Issue 12: the admin API refuses what a hostile web page or a token guesser would send.

Measured before: a token-less admin (the default on loopback) answered any ``Host``, so a
page the administrator visited could read ``/api/series`` through DNS rebinding, and a
cross-site ``POST /api/jobs/{id}/retry`` with ``Content-Type: text/plain`` was processed.
Here: a foreign Host is 421; a change from another origin is 403, one that is not JSON
is 415, whether or not a token is configured; a viewer's token reads but changes nothing;
wrong tokens are audited and, past the limit, answered 429; bodies have a size limit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from dicomnode.admin import AdminAccess, AdminServices, create_app
from dicomnode.admin.hosts import AllowedHosts
from dicomnode.admin.ratelimit import AuthFailures
from dicomnode.admin.tokens import single
from dicomnode.node import Node
from dicomnode.testing.process import poll_until

JSON = {"Content-Type": "application/json"}
RULE = "[]\n"  # a valid rule file: no rules


# -- Host: DNS rebinding ---------------------------------------------------------------


def test_a_rebinding_page_cannot_read_the_series_of_an_open_node(
    node: Node, http_call: Callable[..., Any]
) -> None:
    """The issue's attack on a real node: open (no token) on loopback, as by default."""
    assert node.admin is not None
    port = node.admin.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        refused = http_call(port, "GET", "/api/series", headers={"Host": host})
        assert refused.status == 421, host
        assert "admin.allowed_hosts" in refused.body["detail"]
        assert refused.body["detail"].count("evil.example") == 1  # named, nothing else shown
    # The same request addressed to the node by an IP literal or localhost is answered.
    assert http_call(port, "GET", "/api/series", headers={"Host": f"127.0.0.1:{port}"}).body == []
    assert (
        http_call(port, "GET", "/api/series", headers={"Host": f"localhost:{port}"}).status == 200
    )


@pytest.mark.parametrize("path", ["/healthz", "/ui/", "/openapi.json", "/api/overview"])
def test_a_foreign_host_is_refused_on_every_path(
    node: Node, client_for: Callable[..., TestClient], path: str
) -> None:
    client = client_for(node)
    assert client.get(path, headers={"Host": "evil.example"}).status_code == 421
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("LOCALHOST:8080", True),
        ("localhost.:8080", True),
        ("127.0.0.1", True),
        ("10.1.2.3:8080", True),  # an IP literal cannot be an attacker's page's name
        ("[::1]:8080", True),
        ("[fe80::1]", True),
        (socket.gethostname(), True),  # this machine's own name, by default
        ("evil.example", False),
        ("evil.example:8080", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
        ("[::1", False),
        ("a:" + "9" * 5000, False),  # no number parsing on hostile input
        ("localhost:\u00b2", False),  # a Latin-1 "digit" is no port
    ],
)
def test_the_default_hosts_are_loopback_ip_literals_and_this_machine(
    host: str, allowed: bool
) -> None:
    assert AllowedHosts.of(None, "127.0.0.1").allows(host) is allowed


def test_configured_hosts_replace_this_machines_names_and_may_name_a_domain() -> None:
    hosts = AllowedHosts.of(["PACS-admin.example.org.", "*.corp.example"], "0.0.0.0")
    for host in ("pacs-admin.example.org:8443", "a.corp.example", "b.a.corp.example"):
        assert hosts.allows(host), host
    for host in ("localhost", "192.0.2.7", "[::1]:80"):
        assert hosts.allows(host), host
    for host in ("corp.example", "evil.example", "pacs-admin.example.org.evil.example"):
        assert not hosts.allows(host), host
    if socket.gethostname() not in ("localhost", *hosts.names):
        assert not hosts.allows(socket.gethostname())
    assert AllowedHosts.of(["*"], "127.0.0.1").allows("anything.example")


def test_the_bound_name_is_always_allowed() -> None:
    assert AllowedHosts.of(["other.example"], "admin.example.org").allows("admin.example.org")


# -- cross-site changes ----------------------------------------------------------------


@pytest.fixture
def failed_job(
    node_factory: Callable[..., Node],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    pipeline_settings: Callable[..., dict[str, Any]],
    http_call: Callable[..., Any],
) -> tuple[Node, str]:
    """An open node (no token, loopback) with one failed pipeline job."""
    write_rules("- {name: bone, match: {Modality: CT}, pipeline: bone}\n")
    node = node_factory(**pipeline_settings("explode"))
    assert node.admin is not None
    port = node.admin.port
    send_phantom(node)

    def failed() -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = http_call(port, "GET", "/api/jobs?state=failed").body
        return answer

    poll_until(failed, timeout=60, what="the job to fail")
    (job,) = failed()
    return node, str(job["id"])


CROSS_SITE = {
    "a form": {"Content-Type": "application/x-www-form-urlencoded"},
    "text/plain": {"Content-Type": "text/plain;charset=UTF-8"},
    "multipart": {"Content-Type": "multipart/form-data; boundary=x"},
    "no content type": {},
    "text/plain from another origin": {
        "Content-Type": "text/plain",
        "Origin": "http://evil.example",
    },
    "JSON from another origin": {**JSON, "Origin": "http://evil.example"},
    "JSON from another port": {**JSON, "Origin": "http://127.0.0.1:1"},
    "JSON from an opaque origin": {**JSON, "Origin": "null"},
    "JSON from https": {**JSON, "Origin": "https://127.0.0.1"},
    "JSON the browser marks cross-site": {**JSON, "Sec-Fetch-Site": "cross-site"},
    "JSON from a sibling site": {**JSON, "Sec-Fetch-Site": "same-site"},
}


def test_a_cross_site_retry_is_refused_and_not_done(
    failed_job: tuple[Node, str], http_call: Callable[..., Any]
) -> None:
    """The issue's second attack, and its variants, on the real node."""
    node, job_id = failed_job
    assert node.admin is not None
    port = node.admin.port
    path = f"/api/jobs/{job_id}/retry"
    for what, headers in CROSS_SITE.items():
        answer = http_call(port, "POST", path, body=b"x=1", headers=headers)
        assert answer.status in (403, 415), what
        expected = 415 if "Origin" not in headers and "Sec-Fetch-Site" not in headers else 403
        assert answer.status == expected, (what, answer.body)
    job = http_call(port, "GET", f"/api/jobs/{job_id}").body["job"]
    assert (job["state"], job["attempts"]) == ("failed", 1)
    assert http_call(port, "GET", "/api/audit?action=job.retry").body == []

    # The node's own page (same origin, JSON) and a script (no Origin) may retry.
    own = {**JSON, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert http_call(port, "POST", path, headers=own).status == 200
    assert len(http_call(port, "GET", "/api/audit?action=job.retry").body) == 1


def test_a_token_does_not_exempt_a_change_from_the_cross_site_rules(
    node: Node, client_for: Callable[..., TestClient], rules_dir: Path
) -> None:
    client = client_for(node)  # with the admin token in every request
    body = json.dumps({"name": "x.yaml", "content": RULE})
    as_text = client.put("/api/rules", content=body, headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415
    assert "application/json" in as_text.json()["detail"]
    foreign = client.put("/api/rules", content=body, headers={**JSON, "Origin": "http://x.test"})
    assert foreign.status_code == 403
    assert not (rules_dir / "x.yaml").exists()
    assert client.put("/api/rules", content=body, headers=JSON).status_code == 200
    assert (rules_dir / "x.yaml").exists()


def test_reads_are_not_subject_to_origin_or_content_type(
    node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(node)
    headers = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert client.get("/api/series", headers=headers).status_code == 200


# -- body size ---------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_and_not_saved(
    node: Node, services_for: Callable[..., AdminServices], token: str, rules_dir: Path
) -> None:
    access = AdminAccess(tokens=single(token), max_body_bytes=2048)
    client = TestClient(
        create_app(services_for(node), access),
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {token}"},
    )
    small = {"name": "small.yaml", "content": RULE}
    big = {"name": "big.yaml", "content": RULE + "#" * 2048}
    refused = client.put("/api/rules", json=big)
    assert refused.status_code == 413
    assert "admin.max_body_bytes (2048)" in refused.json()["detail"]
    assert not (rules_dir / "big.yaml").exists()
    assert client.put("/api/rules", json=small).status_code == 200


def test_a_streamed_body_is_counted_as_it_arrives(
    node_factory: Callable[..., Node], http_call: Callable[..., Any], rules_dir: Path
) -> None:
    """Chunked: no Content-Length to refuse up front, the bytes are counted instead."""
    node = node_factory(admin={"max_body_bytes": 2048})
    assert node.admin is not None
    document = json.dumps({"name": "big.yaml", "content": RULE + "#" * 3000}).encode()
    chunks = [document[i : i + 500] for i in range(0, len(document), 500)]
    answer = http_call(node.admin.port, "PUT", "/api/rules", body=iter(chunks), headers=JSON)
    assert answer.status == 413, answer.body
    assert "admin.max_body_bytes" in answer.body["detail"]
    assert not (rules_dir / "big.yaml").exists()
    small = json.dumps({"name": "small.yaml", "content": RULE}).encode()
    answer = http_call(node.admin.port, "PUT", "/api/rules", body=iter([small]), headers=JSON)
    assert answer.status == 200, answer.body


# -- roles -----------------------------------------------------------------------------


@pytest.fixture
def two_role_node(node_factory: Callable[..., Node], tmp_path: Path) -> Node:
    """A node with a viewer token ``ward`` and an admin token ``ops``, from files."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    for name, value in (("ward", "viewer-" + "a" * 40), ("ops", "admin-" + "b" * 40)):
        path = folder / f"{name}.token"
        path.write_text(value + "\n")
        path.chmod(0o600)
    return node_factory(
        admin={
            "tokens": [
                {"file": str(folder / "ward.token"), "role": "viewer", "name": "ward"},
                {"file": str(folder / "ops.token"), "role": "admin", "name": "ops"},
            ]
        }
    )


VIEWER = {"Authorization": "Bearer viewer-" + "a" * 40}
ADMIN = {"Authorization": "Bearer admin-" + "b" * 40}


def test_a_viewer_reads_but_cannot_change_rules_retry_or_echo(
    two_role_node: Node, http_call: Callable[..., Any], rules_dir: Path
) -> None:
    assert two_role_node.admin is not None
    port = two_role_node.admin.port
    for path in ("/api/series", "/api/jobs", "/api/rules", "/api/audit", "/api/overview"):
        assert http_call(port, "GET", path, headers=VIEWER).status == 200, path
    assert http_call(port, "GET", "/api/destinations?echo=false", headers=VIEWER).status == 200
    check = json.dumps({"name": "x.yaml", "content": RULE}).encode()
    checked = http_call(port, "POST", "/api/rules/check", body=check, headers={**VIEWER, **JSON})
    assert checked.status == 200, checked.body

    changes = [
        ("PUT", "/api/rules", check),
        ("POST", "/api/jobs/send-1/retry", None),  # 403, not 404: refused before the route
        ("POST", "/api/series/1.2.3/retry-routing", None),
        ("POST", "/api/series/1.2.3/reroute", None),
        ("GET", "/api/destinations", None),  # echo=true is the default
        ("GET", "/api/destinations?echo=true", None),
    ]
    for method, path, body in changes:
        refused = http_call(port, method, path, body=body, headers={**VIEWER, **JSON})
        assert refused.status == 403, (method, path, refused.body)
        assert "'ward' is a viewer's" in refused.body["detail"]
        assert "needs an admin token" in refused.body["detail"]
    assert not (rules_dir / "x.yaml").exists()
    assert http_call(port, "GET", "/api/audit", headers=VIEWER).body == []


def test_an_admin_token_changes_and_the_audit_names_it(
    two_role_node: Node, http_call: Callable[..., Any], rules_dir: Path
) -> None:
    assert two_role_node.admin is not None
    port = two_role_node.admin.port
    body = json.dumps({"name": "x.yaml", "content": RULE}).encode()
    saved = http_call(
        port, "PUT", "/api/rules", body=body, headers={**ADMIN, **JSON, "X-Actor": "dr.jones"}
    )
    assert saved.status == 200, saved.body
    assert (rules_dir / "x.yaml").read_text() == RULE
    (entry,) = http_call(port, "GET", "/api/audit?action=rules.save", headers=VIEWER).body
    assert entry["actor"] == "dr.jones"
    assert (entry["detail"]["token"], entry["detail"]["role"]) == ("ops", "admin")
    assert "admin-" not in json.dumps(entry)  # the name, never the token
    missing = http_call(port, "POST", "/api/jobs/send-1/retry", headers={**ADMIN, **JSON})
    assert missing.status == 404  # past the role check, to the route
    echo = http_call(port, "GET", "/api/destinations?echo=true", headers=ADMIN)
    assert echo.status == 200


def test_every_change_in_the_api_document_needs_an_admin_except_checks_dry_runs_and_comparisons(
    node: Node, services_for: Callable[..., AdminServices]
) -> None:
    """A new POST or PUT is an admin's unless it declares that viewers may use it."""
    viewer = "v" * 32
    app = create_app(services_for(node), AdminAccess(tokens=single(viewer, role="viewer")))
    client = TestClient(app, base_url="http://localhost")
    document = client.get("/openapi.json").json()
    allowed = set()
    for path, operations in document["paths"].items():
        for method in operations:
            if method == "get":
                continue
            url = path.replace("{job_id}", "send-1").replace("{series_uid}", "1.2.3")
            answer = client.request(
                method.upper(),
                url,
                content=b"{}",
                headers={**JSON, "Authorization": f"Bearer {viewer}"},
            )
            if answer.status_code != 403:
                allowed.add((method, path))
    # Each of these computes an answer and changes nothing (a shadow comparison reads the
    # labels it is sent; it keeps none).
    assert allowed == {
        ("post", "/api/rules/check"),
        ("post", "/api/rules/dry-run"),
        ("post", "/api/shadow/compare"),
    }


# -- failed authentications ------------------------------------------------------------


def test_wrong_tokens_are_audited_and_then_locked_out_even_with_the_right_one(
    node: Node, services_for: Callable[..., AdminServices], token: str
) -> None:
    access = AdminAccess(tokens=single(token), max_auth_failures=3)
    app = create_app(services_for(node), access)
    guesser = TestClient(app, base_url="http://localhost", client=("192.0.2.7", 40000))
    other = TestClient(app, base_url="http://localhost", client=("192.0.2.8", 40000))
    guesses = [f"guess-{n}-secret" for n in range(3)]
    with capture_logs() as events:
        for guess in guesses:
            answer = guesser.get("/api/series", headers={"Authorization": f"Bearer {guess}"})
            assert answer.status_code == 401
            assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    locked = guesser.get("/api/series", headers={"Authorization": f"Bearer {token}"})
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    assert "192.0.2.7" in locked.json()["detail"]
    # Another address is not affected.
    auth = {"Authorization": f"Bearer {token}"}
    assert other.get("/api/series", headers=auth).status_code == 200

    entries = other.get("/api/audit", headers=auth).json()
    assert [(e["action"], e["actor"]) for e in reversed(entries)] == [
        ("auth.failed", "192.0.2.7"),
        ("auth.failed", "192.0.2.7"),
        ("auth.failed", "192.0.2.7"),
        ("auth.locked_out", "192.0.2.7"),
    ]
    assert entries[-1]["target"] == "/api/series"
    assert entries[-1]["detail"] == {"method": "GET", "reason": "invalid token"}
    # The guesses appear nowhere: not in the audit, not in the logs.
    said = json.dumps(entries) + json.dumps(events, default=str)
    assert [e["event"] for e in events] == ["admin_auth_failed"] * 3 + ["admin_auth_locked_out"]
    for secret in (*guesses, token):
        assert secret not in said


def test_requests_without_a_token_are_not_counted_as_guesses(
    node: Node, services_for: Callable[..., AdminServices], token: str
) -> None:
    """A browser opening the page asks without a token first; that guesses nothing."""
    access = AdminAccess(tokens=single(token), max_auth_failures=2)
    client = TestClient(create_app(services_for(node), access), base_url="http://localhost")
    for _ in range(5):
        assert client.get("/api/series").status_code == 401
    answer = client.get("/api/series", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert client.get("/api/audit", headers={"Authorization": f"Bearer {token}"}).json() == []


def test_the_lock_out_ends_when_the_window_passes() -> None:
    failures = AuthFailures(limit=3, window=60.0)
    assert [failures.fail("192.0.2.7", t) for t in (0.0, 10.0, 20.0)] == [False, False, True]
    assert failures.retry_after("192.0.2.7", 30.0) == 30  # until the first leaves the window
    assert failures.retry_after("192.0.2.8", 30.0) is None
    assert failures.retry_after("192.0.2.7", 60.0) is None  # two left in the window
    assert failures.fail("192.0.2.7", 61.0) is True  # the third again
    assert failures.retry_after("192.0.2.7", 81.0) is None


def test_ipv6_clients_count_per_slash_64_and_memory_is_bounded() -> None:
    failures = AuthFailures(limit=2, window=60.0, max_addresses=5)
    failures.fail("2001:db8::1", 0.0)
    failures.fail("2001:db8::ffff", 0.0)
    assert failures.retry_after("2001:db8::42", 1.0) is not None  # the same /64
    assert failures.retry_after("2001:db8:0:1::1", 1.0) is None
    failures.fail("::ffff:192.0.2.9", 0.0)
    failures.fail("192.0.2.9", 0.0)
    assert failures.retry_after("192.0.2.9", 1.0) is not None  # IPv4-mapped is IPv4
    for n in range(100):
        failures.fail(f"198.51.100.{n}", 1.0)
    assert failures.tracked() == 5
