"""Serving the admin app: uvicorn on its own thread, started and stopped by the node.

The socket is bound here, before uvicorn starts, so a taken port is an error the node
reports at start-up (uvicorn would only log it and exit its thread).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from dicomnode.admin.https import AdminHTTPS
from dicomnode.errors import ConfigError
from dicomnode.logs import get_logger

log = get_logger(__name__)


class AdminServer:
    """The admin API listening on ``host:port`` (port 0: any free port, see ``port``),
    over HTTPS when ``https`` is given."""

    def __init__(self, app: FastAPI, host: str, port: int, https: AdminHTTPS | None = None) -> None:
        self._host = host
        self._requested_port = port
        self.scheme = "https" if https is not None else "http"
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,  # keep the node's structlog configuration
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
                server_header=False,  # nothing to tell a scanner
                ssl_context_factory=None if https is None else (lambda _c, _d: https.context),
            )
        )
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            return self._requested_port
        return int(self._socket.getsockname()[1])

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve; returns once requests are answered. Raises ConfigError."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"admin: cannot listen on {self._host}:{self._requested_port}: {exc.strerror}"
            ) from exc
        sock.listen(128)
        sock.set_inheritable(True)
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="admin-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"admin: the HTTP server did not start on {self._address()}")
            time.sleep(0.01)
        log.info("admin_listening", host=self._host, port=self.port, scheme=self.scheme)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the requests in progress (up to a few seconds) and stop."""
        self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._thread = None
        log.info("admin_stopped")

    def _address(self) -> str:
        return f"{self._host}:{self.port}"
