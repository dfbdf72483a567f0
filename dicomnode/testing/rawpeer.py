"""A TCP listener on loopback that speaks just enough DICOM to misbehave on demand.

No real peer aborts an association request or stays silent when asked to, so the
outbox's reasons for those two are tested against this: it reads what a requestor
sends first (the A-ASSOCIATE-RQ) and answers ``reply``, or nothing, ever.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

from dicomnode.testing import pdus
from dicomnode.testing.ports import LOOPBACK

# PS3.8 9.3.8: an A-ABORT whose source (0) is the DICOM UL service-user.
ABORT_BY_USER = pdus.abort()
_READ_TIMEOUT_S = 5.0


class RawPeer:
    """Accepts connections until closed; answers each first read with ``reply`` (None:
    never answers, and holds the connection open until ``close``)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="raw-peer", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(_READ_TIMEOUT_S)
            self._held.append(conn)
            try:
                conn.recv(65536)  # the A-ASSOCIATE-RQ, or its start
                if self.reply is not None:
                    conn.sendall(self.reply)
            except OSError:
                continue

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=_READ_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
