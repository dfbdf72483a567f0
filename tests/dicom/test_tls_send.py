"""Sending over DICOM-TLS to DCMTK's storescp, and every way the handshake can fail.

storescp 3.6.7 ``+tls`` serves DICOM-TLS with its BCP 195 profile; with
``--require-peer-cert`` it wants our client certificate, issued by the CA it trusts
(``+cf``). Each failure must name its reason and say whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.config import DestinationTLS
from dicomnode.dicom import tls
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import ScuSettings, SendableFile, TlsSettings, echo, inspect_file
from dicomnode.dicom.scu import send_files as scu_send_files
from dicomnode.errors import PeerTLSError, PeerUnreachableError
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.result_files import ResultFiles, write_result_files
from dicomnode.testing.storescp import StoreSCP

SOURCE = "destinations.pacs.tls"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        self.other_ca = TestCA(folder / "other", name="another CA")
        self.server = self.ca.issue("pacs", stem="server")
        self.client = self.ca.issue("dicomnode", stem="client")
        self.stranger = self.other_ca.issue("dicomnode", stem="stranger")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[SendableFile]:
    files: ResultFiles = write_result_files(tmp_path_factory.mktemp("results"))
    found = [inspect_file(path) for path in (files.seg, files.sr)]
    assert all(isinstance(item, SendableFile) for item in found)
    return found  # type: ignore[return-value]  # checked just above


def tls_storescp(server: Issued, ca: TestCA, *extra: str) -> StoreSCP:
    """storescp on DICOM-TLS only, requiring a client certificate from ``ca``."""
    args = ["+tls", str(server.private_key), str(server.certificate)]
    return StoreSCP(
        ae_title="PACS",
        extra_args=[*args, "+cf", str(ca.certificate), "--require-peer-cert", *extra],
    )


@pytest.fixture
def pacs(pki: Pki) -> Iterator[StoreSCP]:
    with tls_storescp(pki.server, pki.ca) as scp:
        yield scp


def settings(
    ca: Path | None, client: Issued | None = None, server_name: str | None = None
) -> ScuSettings:
    config = DestinationTLS(
        ca_certificates=ca,
        certificate=client.certificate if client else None,
        private_key=client.private_key if client else None,
        server_name=server_name,
    )
    context = tls.ReloadingContext.for_destination("pacs", config)
    return ScuSettings(
        connect_timeout_seconds=5.0,
        network_timeout_seconds=5.0,
        tls=TlsSettings(context.current, config.server_name, SOURCE),
    )


def address(scp: StoreSCP) -> DicomAddress:
    return DicomAddress(scp.ae_title, "127.0.0.1", scp.port)


def test_seg_and_sr_arrive_over_mutual_tls(
    pacs: StoreSCP, pki: Pki, results: list[SendableFile]
) -> None:
    sent = scu_send_files(results, address(pacs), settings(pki.ca.certificate, pki.client))
    assert [r.ok for r in sent] == [True, True], [r.note for r in sent]
    received = pacs.wait_for_files(2, timeout=30)
    classes = sorted(str(pydicom.dcmread(p).SOPClassUID) for p in received)
    assert classes == sorted([SegmentationStorage, Comprehensive3DSRStorage])


def test_echo_over_tls_names_the_server_by_its_certificate(pacs: StoreSCP, pki: Pki) -> None:
    # "localhost" is in the certificate, and reaches the same loopback port.
    result = echo(address(pacs), settings(pki.ca.certificate, pki.client, "localhost"))
    assert result.status == 0x0000


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("another CA", "certificate verify failed: self-signed certificate in certificate chain"),
        (
            "another name",
            "certificate verify failed: Hostname mismatch, "
            "certificate is not valid for 'pacs.example.org'",
        ),
        ("no client certificate", "the peer sent tlsv13 alert certificate required"),
        ("a client certificate it does not trust", "the peer sent tlsv1 alert unknown ca"),
    ],
)
def test_a_handshake_that_cannot_succeed_fails_permanently_with_its_reason(
    pacs: StoreSCP, pki: Pki, results: list[SendableFile], case: str, words: str
) -> None:
    chosen = {
        "another CA": settings(pki.other_ca.certificate, pki.client),
        "another name": settings(pki.ca.certificate, pki.client, "pacs.example.org"),
        "no client certificate": settings(pki.ca.certificate),
        "a client certificate it does not trust": settings(pki.ca.certificate, pki.stranger),
    }[case]
    with pytest.raises(PeerTLSError) as raised:
        scu_send_files(results, address(pacs), chosen)
    message = str(raised.value)
    assert raised.value.permanent, message
    assert message.startswith(f"{address(pacs)}: TLS: {words}"), message
    assert message.endswith(f"({SOURCE})"), message
    assert pacs.files() == []


def test_an_expired_server_certificate_is_named(pki: Pki, results: list[SendableFile]) -> None:
    expired = pki.ca.issue("pacs", expired=True, stem="expired")
    with tls_storescp(expired, pki.ca) as scp, pytest.raises(PeerTLSError) as raised:
        scu_send_files(results, address(scp), settings(pki.ca.certificate, pki.client))
    assert raised.value.permanent
    assert "TLS: certificate verify failed: certificate has expired" in str(raised.value)


def test_a_plain_port_is_a_temporary_failure_that_says_so(
    pki: Pki, results: list[SendableFile]
) -> None:
    with StoreSCP(ae_title="PLAIN") as plain, pytest.raises(PeerTLSError) as raised:
        scu_send_files(results, address(plain), settings(pki.ca.certificate, pki.client))
    assert not raised.value.permanent
    assert "(does that port take DICOM-TLS?)" in str(raised.value)


def test_a_closed_port_stays_connection_refused(pki: Pki, results: list[SendableFile]) -> None:
    closed = DicomAddress("PACS", "127.0.0.1", refusing_port())
    with pytest.raises(PeerUnreachableError) as raised:
        scu_send_files(results, closed, settings(pki.ca.certificate, pki.client))
    assert not raised.value.permanent
    assert str(raised.value) == f"{closed}: connection refused"
