"""/api/destinations for a DICOMweb destination: its URL, and a QIDO-RS query as its check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from dicomnode.node import Node
from dicomnode.testing.orthanc import DICOMWEB_PLUGIN, Orthanc
from dicomnode.testing.ports import refusing_port


@pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="orthanc-dicomweb is not installed")
def test_a_dicomweb_destination_is_checked_by_qido_rs(
    node_factory: Callable[..., Node], client_for: Callable[..., TestClient]
) -> None:
    down = f"http://127.0.0.1:{refusing_port()}/dicom-web"
    with Orthanc(dicomweb=True) as orthanc:
        node = node_factory(
            destinations={
                "web": {"kind": "dicomweb", "url": orthanc.dicomweb_url},
                "down": {"kind": "dicomweb", "url": down},
            }
        )
        response = client_for(node).get("/api/destinations")
    assert response.status_code == 200, response.text
    by_name = {d["name"]: d for d in response.json()}
    web = by_name["web"]
    assert (web["kind"], web["url"], web["ae_title"], web["port"]) == (
        "dicomweb",
        orthanc.dicomweb_url,
        None,
        None,
    )
    assert web["echo"]["ok"] is True
    assert web["echo"]["error"] is None
    assert 0 < web["echo"]["ms"] < 5000
    assert by_name["down"]["echo"]["ok"] is False
    assert by_name["down"]["echo"]["error"] == f"{down}: connection refused"
