"""DICOM-TLS contexts (PS3.15 Annex B) for the listener and for destinations.

Both sides follow BCP 195 (RFC 9325): TLS 1.2 or newer only, TLS 1.2 limited to ECDHE or
DHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), no compression, no
renegotiation. The listener's context asks for (or requires) a client certificate from
the configured issuers; a destination's context verifies the server's chain and name.

Certificates are files an operator replaces (a renewal, a new CA): a ``ReloadingContext``
looks at the files' identity (inode, size, mtime) whenever a connection needs the context
and builds a new one when any changed, so the next association uses the new certificate
without a restart; SIGHUP forces the same. A replacement that does not load (a key that
does not match, a half-written file) leaves the previous context in use and is logged.
"""

from __future__ import annotations

import re
import ssl
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from dicomnode.config import DestinationTLS, NodeTLSConfig, TLSVersion
from dicomnode.logs import get_logger

log = get_logger(__name__)

# RFC 9325 4.2: TLS 1.2 suites with forward secrecy and authenticated encryption only.
# TLS 1.3 suites are all acceptable and keep OpenSSL's defaults.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"

_SOURCE_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")  # "[SSL] PEM lib (_ssl.c:3926)"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# getpeercert()'s attribute names, as RFC 4514 writes them.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _harden(context: ssl.SSLContext, min_version: TLSVersion) -> None:
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE


def server_context(config: NodeTLSConfig) -> ssl.SSLContext:
    """The listener's context; raises ``ssl.SSLError`` or ``OSError`` naming a bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context, config.min_version)
    _load_chain(context, config.certificate, config.private_key)
    if config.ca_certificates is not None:
        _load_trust(context, config.ca_certificates)
        context.verify_mode = (
            ssl.CERT_REQUIRED if config.require_client_certificate else ssl.CERT_OPTIONAL
        )
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(config: DestinationTLS) -> ssl.SSLContext:
    """A destination's context: the server's chain and name are always verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    _harden(context, config.min_version)
    if config.ca_certificates is not None:
        _load_trust(context, config.ca_certificates)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.certificate is not None and config.private_key is not None:
        _load_chain(context, config.certificate, config.private_key)
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    _check_private(private_key)
    try:
        context.load_cert_chain(certificate, private_key)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"{certificate} / {private_key}: not a certificate and its key ({describe(exc)})"
        ) from exc
    except OSError as exc:
        culprit = exc.filename or _unreadable(certificate, private_key) or certificate
        raise TLSConfigError(f"{culprit}: {exc.strerror}") from exc


# As ssh does for its keys, and the admin API for its token files: a key that other users
# may read (or its group may replace) is refused, since whoever reads it is the node.
_UNSAFE_KEY_MODE = stat.S_IWGRP | stat.S_IRWXO


def _check_private(private_key: Path) -> None:
    try:
        mode = private_key.stat().st_mode
    except OSError:
        return  # load_cert_chain names it
    if mode & _UNSAFE_KEY_MODE:
        raise TLSConfigError(
            f"{private_key}: a private key that other users may read or change (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {private_key} (or 640, group "
            "readable by the node's group)"
        )


def _unreadable(*paths: Path) -> Path | None:
    """The first of ``paths`` that cannot be opened: ``load_cert_chain`` raises a missing
    file's OSError without its name, and it is as often the key as the certificate."""
    for path in paths:
        try:
            with path.open("rb"):
                pass
        except OSError:
            return path
    return None


def _load_trust(context: ssl.SSLContext, ca_certificates: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca_certificates)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"{ca_certificates}: no PEM certificates to trust ({describe(exc)})"
        ) from exc
    except OSError as exc:
        raise TLSConfigError(f"{ca_certificates}: {exc.strerror}") from exc


class TLSConfigError(Exception):
    """A certificate, key or trust file that cannot be used; the message names it."""


def describe(exc: BaseException) -> str:
    """A short reason for a TLS failure, without OpenSSL's source location."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "handshake not finished in time"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError):
        return "connection closed during the handshake"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return _SOURCE_LOCATION.sub("", str(exc)) or type(exc).__name__


def peer_subject(sock: ssl.SSLSocket) -> str | None:
    """The verified peer certificate's subject as an RFC 4514 string, or None."""
    try:
        certificate = sock.getpeercert()
    except (ValueError, OSError):
        return None
    subject = certificate.get("subject") if certificate else None
    if not isinstance(subject, tuple) or not subject:
        return None
    return format_subject(cast(Sequence[Sequence[tuple[str, str]]], subject))


def format_subject(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``getpeercert()``'s subject (most general RDN first) in RFC 4514 order."""
    parts = []
    for rdn in reversed(subject):
        parts.append(
            "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        )
    return ",".join(parts)


def _escape(value: str) -> str:
    escaped = "".join(f"\\{char}" if char in ',+"\\<>;' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


_Identity = tuple[tuple[int, int, int] | None, ...]


class ReloadingContext:
    """An SSL context rebuilt from its files when they change (or on ``reload``)."""

    def __init__(self, build: Callable[[], ssl.SSLContext], files: Sequence[Path], what: str):
        self._build = build
        self._files = tuple(files)
        self._what = what
        self._lock = threading.Lock()
        self._identity = self._identify()
        self._context = build()  # at start-up a bad file is an error (TLSConfigError)
        self._failed: _Identity | None = None

    @classmethod
    def for_listener(cls, config: NodeTLSConfig) -> ReloadingContext:
        files = [config.certificate, config.private_key]
        if config.ca_certificates is not None:
            files.append(config.ca_certificates)
        return cls(lambda: server_context(config), files, "listener")

    @classmethod
    def for_destination(cls, name: str, config: DestinationTLS) -> ReloadingContext:
        files = [
            path
            for path in (config.ca_certificates, config.certificate, config.private_key)
            if path is not None
        ]
        return cls(lambda: client_context(config), files, f"destination {name}")

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, rebuilt first if a file changed."""
        identity = self._identify()
        if identity == self._identity or identity == self._failed:
            return self._context
        with self._lock:
            if identity != self._identity and identity != self._failed:
                self._rebuild(identity, reason="file_changed")
            return self._context

    def reload(self) -> bool:
        """Rebuild now (SIGHUP); False (and the old context kept) if the files are bad."""
        with self._lock:
            return self._rebuild(self._identify(), reason="signal")

    def _rebuild(self, identity: _Identity, reason: str) -> bool:
        try:
            context = self._build()
        except (TLSConfigError, ssl.SSLError, OSError) as exc:
            self._failed = identity
            log.error("tls_reload_failed", context=self._what, trigger=reason, error=str(exc))
            return False
        self._context = context
        self._identity = identity
        self._failed = None
        log.info("tls_reloaded", context=self._what, trigger=reason)
        return True

    def _identify(self) -> _Identity:
        return tuple(_identity(path) for path in self._files)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def handshake_socket(context: ssl.SSLContext, raw: Any) -> ssl.SSLSocket:
    """``raw`` wrapped for the server side, its handshake not started (the caller runs it
    on the connection's own thread, under its time-out)."""
    return context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
