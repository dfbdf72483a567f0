"""DICOM-TLS from the sender's side, for tests and benchmarks.

DCMTK's TLS options as storescu and echoscu 3.6.7 take them, a Python client that reads
the certificate a listener presents now, and the bytes of a real ClientHello (for peers
that start a handshake and never finish it). Certificates come from ``testing.pki``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import warnings
from pathlib import Path

from cryptography import x509

from dicomnode.testing.pki import Issued
from dicomnode.testing.ports import LOOPBACK, require_loopback


def dcmtk_tls_args(ca_certificate: Path, client: Issued | None) -> list[str]:
    """storescu/echoscu options for DICOM-TLS to a server whose chain ``ca_certificate``
    verifies: mutual TLS with ``client``'s certificate, or anonymous TLS (``+tla``, no
    client certificate) when it is None. DCMTK's default profile is BCP 195
    non-downgrading (``+py``); an unencrypted key is read without a password prompt."""
    trust = ["+cf", str(ca_certificate)]
    if client is None:
        return ["+tla", *trust]
    return ["+tls", str(client.private_key), str(client.certificate), *trust]


def client_context(ca_certificate: Path | None, client: Issued | None = None) -> ssl.SSLContext:
    """A Python client's context: the server verified against ``ca_certificate`` (not by
    name: the tests' certificates name localhost), or not at all when it is None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if ca_certificate is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=ca_certificate)
    if client is not None:
        context.load_cert_chain(client.certificate, client.private_key)
    return context


def legacy_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers only ``version`` (TLS 1.0 or 1.1), with every cipher OpenSSL
    still has for it (``@SECLEVEL=0``): so a refusal comes from the server, not from
    this client's own OpenSSL policy."""
    context = client_context(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the very point of this client
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def server_certificate(
    port: int,
    ca_certificate: Path,
    client: Issued | None = None,
    host: str = LOOPBACK,
    timeout: float = 10.0,
) -> x509.Certificate:
    """The certificate the listener on ``port`` presents now (its chain verified), read
    by a full handshake; the connection is then closed before any DICOM PDU."""
    context = client_context(ca_certificate, client)
    with (
        socket.create_connection((require_loopback(host), port), timeout=timeout) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the server presented no certificate")
    return x509.load_der_x509_certificate(der)


def client_hello() -> bytes:
    """A real TLS ClientHello record as Python's OpenSSL writes it, never sent anywhere."""
    context = client_context(None)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    # It waits for a ServerHello that never comes; the hello is written by then.
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()
