"""``admin.tls``: the API and page over HTTPS, BCP 195 only, a renewed certificate taken
up without a restart."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dicomnode.config import Config
from dicomnode.errors import ConfigError
from dicomnode.node import Node, check_config
from dicomnode.testing.pki import Issued, TestCA

JSON = {"Content-Type": "application/json"}
# How a client sees the server end a handshake: its alert, or the connection closed.
_SERVER_REFUSED = {
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "UNEXPECTED_EOF_WHILE_READING",
}


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def https_node(node_factory: Callable[..., Node], ca: TestCA) -> tuple[Node, Issued]:
    issued = ca.issue("dicomnode admin", stem="admin")
    node = node_factory(
        admin={
            "tls": {
                "certificate": str(issued.certificate),
                "private_key": str(issued.private_key),
            }
        }
    )
    return node, issued


def trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.certificate))


def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def test_the_api_answers_over_https_verified_by_its_ca(
    https_node: tuple[Node, Issued], ca: TestCA, http_call: Callable[..., Any]
) -> None:
    node, _ = https_node
    assert node.admin is not None
    port = node.admin.port
    assert http_call(port, "GET", "/healthz", context=trusting(ca)).body == {"status": "ok"}
    with handshake(port, trusting(ca)) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # The request's own origin is https now: the page's changes pass, an http one does not.
    body = json.dumps({"name": "x.yaml", "content": "[]\n"}).encode()
    own = {**JSON, "Origin": f"https://127.0.0.1:{port}"}
    checked = http_call(
        port, "POST", "/api/rules/check", body=body, headers=own, context=trusting(ca)
    )
    assert checked.status == 200, checked.body
    downgraded = {**JSON, "Origin": f"http://127.0.0.1:{port}"}
    refused = http_call(
        port, "POST", "/api/rules/check", body=body, headers=downgraded, context=trusting(ca)
    )
    assert refused.status == 403


def test_plain_http_on_the_https_port_gets_no_answer(
    https_node: tuple[Node, Issued], http_call: Callable[..., Any]
) -> None:
    node, _ = https_node
    assert node.admin is not None
    with pytest.raises((http.client.HTTPException, OSError)):
        http_call(node.admin.port, "GET", "/healthz")


def old_client(maximum: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that offers what BCP 195 forbids (OpenSSL's own floor lowered for it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers(ciphers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 names, used on purpose
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    return context


def test_tls_1_1_is_refused_by_the_server(https_node: tuple[Node, Issued]) -> None:
    node, _ = https_node
    assert node.admin is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        handshake(node.admin.port, old_client(tls11, "DEFAULT:@SECLEVEL=0"))
    # The server ends the handshake (asyncio closes without flushing its alert); the
    # client did offer TLS 1.1: unable to, it would fail before connecting.
    assert refused.value.reason in _SERVER_REFUSED
    # The same client, allowed TLS 1.2, is served: the version is what was refused.
    with handshake(node.admin.port, old_client(ssl.TLSVersion.TLSv1_2, "DEFAULT")) as tls:
        assert tls.version() == "TLSv1.2"


def test_a_tls_1_2_suite_without_aead_is_refused(https_node: tuple[Node, Issued]) -> None:
    node, _ = https_node
    assert node.admin is not None
    cbc = old_client(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(node.admin.port, cbc)
    assert refused.value.reason in _SERVER_REFUSED
    aead = old_client(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    with handshake(node.admin.port, aead) as tls:
        assert tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_a_renewed_certificate_is_served_without_a_restart(
    https_node: tuple[Node, Issued], ca: TestCA, tmp_path: Path
) -> None:
    node, issued = https_node
    assert node.admin is not None
    port = node.admin.port
    new_ca = TestCA(tmp_path / "pki-new", name="dicomnode new CA")
    renewed = new_ca.issue("dicomnode admin", stem="admin")
    shutil.copyfile(renewed.private_key, issued.private_key)
    shutil.copyfile(renewed.certificate, issued.certificate)
    with handshake(port, trusting(new_ca)) as tls:  # the next handshake: the new one
        assert tls.version() is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, trusting(ca))
    assert node.reload_tls() is True  # SIGHUP does the same at once
    # A half-written replacement: SIGHUP reports it, the renewed certificate stays.
    issued.certificate.write_text("-----BEGIN CERTIFICATE-----\n")
    assert node.reload_tls() is False
    with handshake(port, trusting(new_ca)) as tls:
        assert tls.version() is not None


def test_a_bad_certificate_file_stops_the_start_naming_admin_tls(
    tmp_path: Path, ca: TestCA
) -> None:
    issued = ca.issue("dicomnode admin", stem="admin")
    other = ca.issue("another", stem="other")
    config = Config.model_validate(
        {
            "admin": {
                "tls": {
                    "certificate": str(issued.certificate),
                    "private_key": str(other.private_key),
                }
            }
        }
    )
    with pytest.raises(ConfigError, match=r"^admin\.tls: .*not a certificate and its key"):
        check_config(config)
