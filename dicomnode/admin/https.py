"""HTTPS for the admin API and page (``admin.tls``), on the same port in place of HTTP.

The context is the DICOM-TLS listener's, without client certificates: BCP 195 (RFC
9325), so TLS 1.2 or newer with forward-secret AEAD suites only. A renewed certificate
is taken up without a restart, as on the DICOM-TLS port: every handshake looks at the
files (inode, size, mtime) and, when they changed and load, switches the connection to
a context built from them; SIGHUP (``reload``) rebuilds at once. A replacement that
does not load leaves the previous certificate in use and is logged.

The switch happens in the handshake's server-name callback, which OpenSSL calls for
every ClientHello, with or without SNI; uvicorn keeps the first context for its life.
"""

from __future__ import annotations

import ssl

from dicomnode.config import AdminTLSConfig, NodeTLSConfig
from dicomnode.dicom.tls import ReloadingContext, TLSConfigError, server_context
from dicomnode.errors import ConfigError


class AdminHTTPS:
    """The admin listener's TLS context, following its certificate files."""

    def __init__(self, tls: AdminTLSConfig) -> None:
        listener = NodeTLSConfig(
            certificate=tls.certificate,
            private_key=tls.private_key,
            require_client_certificate=False,
            min_version="1.2",
        )
        try:
            self._contexts = ReloadingContext(
                lambda: server_context(listener), [tls.certificate, tls.private_key], "admin"
            )
        except (TLSConfigError, ssl.SSLError, OSError) as exc:
            raise ConfigError(f"admin.tls: {exc}") from exc
        self.context = self._contexts.current()
        self.context.sni_callback = self._switch

    def reload(self) -> bool:
        """Load the files again now (SIGHUP); False, and the old ones kept, if they fail."""
        return self._contexts.reload()

    def _switch(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._contexts.current()
        if current is not self.context:
            connection.context = current
