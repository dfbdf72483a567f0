"""DICOM-TLS both ways with Orthanc (``DicomTlsEnabled``): results sent to it, studies
pushed by it (``UseDicomTls`` on the node's modality), each side verifying the other's
certificate from one test CA.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.orthanc import Orthanc, OrthancTLS
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until
from dicomnode.testing.result_files import write_result_files


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        self.other_ca = TestCA(folder / "other", name="another CA")
        self.orthanc = self.ca.issue("orthanc", stem="orthanc")
        self.node = self.ca.issue("dicomnode", stem="node")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def orthanc_tls(pki: Pki) -> OrthancTLS:
    return OrthancTLS(pki.orthanc.certificate, pki.orthanc.private_key, pki.ca.certificate)


def tls_destination(orthanc: Orthanc, client: Issued, ca: Path) -> dict[str, Any]:
    return {
        "ae_title": orthanc.aet,
        "host": LOOPBACK,
        "port": orthanc.dicom_port,
        "retry": {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600},
        "tls": {
            "ca_certificates": str(ca),
            "certificate": str(client.certificate),
            "private_key": str(client.private_key),
        },
    }


def forward_results(tmp_path: Path, node: Node) -> None:
    """SEG and SR stored in the node (plain port), which forwards them (rule ``results``)."""
    made = write_result_files(tmp_path / "made")
    assert node.scp.port is not None
    files = [f for f in map(inspect_file, (made.seg, made.sr)) if isinstance(f, SendableFile)]
    results = send_files(files, DicomAddress("DICOMNODE", LOOPBACK, node.scp.port))
    assert all(r.ok for r in results), [r.note for r in results]


@pytest.fixture
def forward_rule(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        "- {name: results, match: {Modality: [SEG, SR]}, forward_to: [pacs]}\n"
    )


@pytest.mark.usefixtures("forward_rule")
def test_the_node_sends_seg_and_sr_to_orthanc_over_tls(
    node_factory: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    with Orthanc(aet="PACS", tls=orthanc_tls(pki)) as orthanc:
        node = node_factory(
            destinations={"pacs": tls_destination(orthanc, pki.node, pki.ca.certificate)}
        )
        forward_results(tmp_path, node)
        poll_until(lambda: len(orthanc.instances()) == 2, timeout=60, what="2 instances")
        classes = sorted(orthanc.instance_tags(i)["SOPClassUID"] for i in orthanc.instances())
        poll_until(
            lambda: [s.state for s in node.outbox.queue.list_sends()] == ["done", "done"],
            timeout=30,
            what="both sends done",
        )
    assert classes == sorted([SegmentationStorage, Comprehensive3DSRStorage])


@pytest.mark.usefixtures("forward_rule")
def test_orthanc_with_a_certificate_from_another_ca_is_refused_for_good(
    node_factory: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    with Orthanc(aet="PACS", tls=orthanc_tls(pki)) as orthanc:
        node = node_factory(
            destinations={"pacs": tls_destination(orthanc, pki.node, pki.other_ca.certificate)}
        )
        forward_results(tmp_path, node)
        poll_until(
            lambda: [s.state for s in node.outbox.queue.list_sends()] == ["failed", "failed"],
            timeout=60,
            what="both sends to fail",
        )
        sends = node.outbox.queue.list_sends()
        assert orthanc.instances() == []
    assert [s.attempts for s in sends] == [1, 1]
    for send in sends:
        assert send.reason is not None
        assert ": TLS: certificate verify failed: " in send.reason
        assert send.reason.endswith("(destinations.pacs.tls)")


def test_orthanc_pushes_a_study_to_the_node_over_tls(
    node_factory: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    node = node_factory(
        node={
            "port": None,  # DICOM-TLS only: what arrives came over TLS
            "tls": {
                "port": 0,
                "certificate": str(pki.node.certificate),
                "private_key": str(pki.node.private_key),
                "ca_certificates": str(pki.ca.certificate),
            },
        }
    )
    assert node.scp.tls_port is not None
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=5, rows=32, columns=32))
    with Orthanc(aet="PACS", tls=orthanc_tls(pki)) as orthanc:
        orthanc.put_modality(
            "dicomnode", (node.config.node.ae_title, LOOPBACK, node.scp.tls_port), use_tls=True
        )
        study = {
            orthanc.get_json(f"/instances/{orthanc.upload(p)}/study")["ID"] for p in series.paths
        }
        answer = orthanc.store_to_modality("dicomnode", sorted(study))
    assert answer.get("FailedInstancesCount") == 0, answer
    series_uid = str(pydicom.dcmread(series.paths[0]).SeriesInstanceUID)

    def stored() -> bool:
        found = node.index.find_series(series_uid)
        return found is not None and found.instance_count == len(series.paths)

    poll_until(stored, timeout=30, what="the pushed series in the node's index")
