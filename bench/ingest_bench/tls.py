"""DICOM-TLS for the ingest benchmark (``--tls``): mutual TLS to every receiver.

One throw-away CA (``dicomnode.testing.pki``, ECDSA P-256 keys) issues a certificate for
the receivers and one for storescu. Every receiver requires and verifies the client's
certificate and storescu verifies the receiver's; each side at its own TLS defaults:

- the node: ``node.tls`` (BCP 195: TLS 1.2+, AEAD suites), its plain port left open;
- Orthanc: ``DicomTlsEnabled`` with ``DicomTlsRemoteCertificateRequired`` (DCMTK inside);
- storescp: ``+tls`` with DCMTK's default profile (BCP 195 non-downgrading) and ``-rc``.

What a Python client negotiates with each (version, cipher suite) is recorded per run;
storescu, also OpenSSL 3 with a BCP 195 profile, gets the same from the same server.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomnode.testing.orthanc import OrthancTLS
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.tls_clients import client_context, dcmtk_tls_args


@dataclass(frozen=True, slots=True)
class BenchTLS:
    """The certificates of one benchmark run."""

    ca_certificate: Path
    server: Issued  # presented by every receiver
    client: Issued  # presented by storescu

    @classmethod
    def make(cls, folder: Path) -> BenchTLS:
        ca = TestCA(folder, name="dicomnode bench CA")
        return cls(ca.certificate, ca.issue("receiver", stem="receiver"), ca.issue("storescu"))

    def sender_args(self) -> list[str]:
        """storescu's options: its certificate, and the CA that signed the receiver's."""
        return dcmtk_tls_args(self.ca_certificate, self.client)

    def storescp_args(self) -> list[str]:
        """storescp's options: its certificate; callers' verified against the CA (``-rc``,
        DCMTK's default, refuses a caller without one)."""
        return [
            "+tls",
            str(self.server.private_key),
            str(self.server.certificate),
            "+cf",
            str(self.ca_certificate),
        ]

    def node_settings(self, port: int) -> dict[str, Any]:
        """The node's ``node.tls`` on ``port`` (client certificates required)."""
        return {
            "port": port,
            "certificate": str(self.server.certificate),
            "private_key": str(self.server.private_key),
            "ca_certificates": str(self.ca_certificate),
        }

    def orthanc(self) -> OrthancTLS:
        return OrthancTLS(
            certificate=self.server.certificate,
            private_key=self.server.private_key,
            trusted_certificates=self.ca_certificate,
            remote_certificate_required=True,
        )


def negotiated(port: int, tls: BenchTLS) -> str:
    """``TLSv1.3 TLS_AES_256_GCM_SHA384``: what a full handshake with ``port`` agrees on.

    The connection closes right after the handshake (no DICOM): receivers log a dropped
    connection at most; this is done before the timed transfer.
    """
    context = client_context(tls.ca_certificate, tls.client)
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=10) as raw,
            context.wrap_socket(raw) as sock,
        ):
            cipher = sock.cipher()
            version = sock.version() or "?"
    except OSError as exc:
        return f"handshake failed: {exc}"
    return f"{version} {cipher[0] if cipher else '?'}"
