"""/api/destinations checks a DICOM-TLS destination over TLS, and says why one fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from dicomnode.node import Node
from dicomnode.testing.pki import TestCA
from dicomnode.testing.storescp import StoreSCP


def test_a_tls_destination_is_echoed_over_tls_and_a_wrong_ca_is_named(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    make_destination: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    ca = TestCA(tmp_path / "ca")
    other = TestCA(tmp_path / "other", name="another CA")
    server, client = ca.issue("pacs", stem="server"), ca.issue("dicomnode", stem="client")
    tls_args = ["+tls", str(server.private_key), str(server.certificate)]
    tls_args += ["+cf", str(ca.certificate), "--require-peer-cert"]

    def tls(trusted: Path) -> dict[str, str]:
        return {
            "ca_certificates": str(trusted),
            "certificate": str(client.certificate),
            "private_key": str(client.private_key),
        }

    with StoreSCP(ae_title="PACS", extra_args=tls_args) as pacs:
        node = node_factory(
            destinations={
                "pacs": {**make_destination("PACS", pacs.port), "tls": tls(ca.certificate)},
                "wrong": {**make_destination("PACS", pacs.port), "tls": tls(other.certificate)},
            }
        )
        response = client_for(node).get("/api/destinations")
    assert response.status_code == 200, response.text
    echo = {d["name"]: d["echo"] for d in response.json()}
    assert echo["pacs"]["ok"] is True, echo["pacs"]
    assert echo["wrong"]["ok"] is False
    assert echo["wrong"]["error"] == (
        f"PACS@127.0.0.1:{pacs.port}: TLS: certificate verify failed: "
        "self-signed certificate in certificate chain (destinations.wrong.tls)"
    )
