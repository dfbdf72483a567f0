"""The administrator's guide's openssl commands make certificates the node and DCMTK accept.

Runs the block between ``tls-certs:begin`` and ``tls-certs:end`` in docs/admin-guide.md as
written, then serves DICOM-TLS with its files and lets DCMTK's echoscu call with the
device's certificate, bound to its subject as the guide shows.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomnode.node import Node

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "admin-guide.md"
OPENSSL = Path("/usr/bin/openssl")
ECHOSCU = Path("/usr/bin/echoscu")


def _documented_block() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- tls-certs:begin -->\s*```sh\n(.*?)```\s*<!-- tls-certs:end -->", text, re.S
    )
    assert found, "docs/admin-guide.md lost its tls-certs block"
    return found.group(1)


@pytest.fixture(scope="module")
def documented_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not OPENSSL.exists():
        pytest.skip("openssl is not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("pki")
    run = subprocess.run(
        ["/bin/bash", "-c", _documented_block()],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "CN=ct1.example.org,O=Example Hospital" in run.stdout  # step 4 prints it
    return folder


def test_documented_keys_are_owner_only(documented_pki: Path) -> None:
    for key in ("ca.key", "node.key", "device.key"):
        assert (documented_pki / key).stat().st_mode & 0o077 == 0, key


def _echo(pki: Path, port: int, *, with_certificate: bool) -> subprocess.CompletedProcess[str]:
    identity = (
        ["+tls", str(pki / "device.key"), str(pki / "device.crt")] if with_certificate else ["+tla"]
    )
    trust = ["+cf", str(pki / "ca.pem")]
    return subprocess.run(
        [
            str(ECHOSCU),
            "-aet",
            "CT1",
            "-aec",
            "DICOMNODE",
            *identity,
            *trust,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_node_serves_the_documented_certificates(
    documented_pki: Path, node_factory: Callable[..., Node]
) -> None:
    pki = documented_pki
    node = node_factory(
        node={
            "port": None,
            "tls": {
                "port": 0,
                "certificate": str(pki / "node.crt"),
                "private_key": str(pki / "node.key"),
                "ca_certificates": str(pki / "ca.pem"),
            },
        },
        callers=[{"ae_title": "CT1", "certificate_subject": "CN=ct1.example.org"}],
    )
    port = node.scp.tls_port
    assert port is not None and node.scp.port is None

    accepted = _echo(pki, port, with_certificate=True)
    assert accepted.returncode == 0, accepted.stderr

    refused = _echo(pki, port, with_certificate=False)  # anonymous TLS: no client certificate
    assert refused.returncode != 0
