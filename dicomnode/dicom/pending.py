"""Connections still negotiating: capped per source address, and closed when they dawdle.

pynetdicom gives every accepted TCP connection a thread that counts as an association
(its ``maximum_associations``) from the moment it connects, and waits the ACSE timeout
for an A-ASSOCIATE-RQ; a read stalled half way through a PDU waits longer still. Six
half-open connections locked real senders out for as long. Here:

- ``admit`` runs in the listener before a connection gets its thread (socketserver's
  ``verify_request``): a source address with ``node.max_pending_per_host`` connections
  still negotiating gets the next one closed at once;
- a watchdog closes any connection whose association is not negotiated within
  ``node.association_request_timeout_seconds``, whatever its thread is blocked on (the
  shutdown ends a blocking ``recv`` and wakes ``select``);
- a connection ends pending when its association is accepted or rejected, or it closes.

The node counts its association limit on established associations (``scp``), so a
pending connection never holds a slot a real sender needs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicomnode.dicom.refusals import Reason, Refusals


@dataclass(slots=True)
class _Entry:
    host: str
    deadline: float
    calling_ae: Callable[[], str] = field(default=lambda: "")
    handshaking: bool = False  # a TLS handshake not finished yet (for the log)


class PendingConnections:
    """The connections accepted whose association is not negotiated yet."""

    def __init__(self, max_per_host: int, timeout_seconds: float, refusals: Refusals) -> None:
        self._max_per_host = max_per_host
        self._timeout = timeout_seconds
        self._refusals = refusals
        self._entries: dict[Any, _Entry] = {}  # by the accepted socket object
        self._condition = threading.Condition()
        self._watchdog: threading.Thread | None = None
        self._stopping = False

    def admit(self, raw: socket.socket | tuple[bytes, socket.socket], address: Any) -> bool:
        """``verify_request``: whether the listener may serve this new connection."""
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        with self._condition:
            pending = sum(1 for entry in self._entries.values() if entry.host == host)
            if pending < self._max_per_host:
                self._entries[raw] = _Entry(host, time.monotonic() + self._timeout)
                self._condition.notify()
                return True
        self._refusals.report(
            "connection_refused",
            Reason.TOO_MANY_PENDING,
            peer_ae="",
            peer_host=host,
            detail=f"{pending} connections from this address still negotiating",
        )
        return False

    def watch(self, raw: Any, calling_ae: Callable[[], str]) -> None:
        """Who ``raw``'s peer says it is, as far as known when it times out (for the log).

        Called once its PDUs are read (through the guard): any TLS handshake is done.
        """
        with self._condition:
            entry = self._entries.get(raw)
            if entry is not None:
                entry.calling_ae = calling_ae
                entry.handshaking = False

    def replace(self, raw: Any, wrapped: Any) -> None:
        """``raw`` is now read through ``wrapped`` (a TLS socket, which took its descriptor,
        its handshake about to start)."""
        with self._condition:
            entry = self._entries.pop(raw, None)
            if entry is not None:
                entry.handshaking = True
                self._entries[wrapped] = entry

    def settle(self, raw: Any) -> bool:
        """``raw`` is no longer negotiating (accepted, rejected, refused or closed).

        False if it was not pending: the watchdog may have closed it, and reported that.
        """
        with self._condition:
            return self._entries.pop(raw, None) is not None

    def count(self) -> int:
        with self._condition:
            return len(self._entries)

    def start(self) -> None:
        self._stopping = False
        self._watchdog = threading.Thread(
            target=self._watch, name="pending-connections", daemon=True
        )
        self._watchdog.start()

    def close_handshakes(self) -> None:
        """Close the connections still in their TLS handshake, unreported (the node stops:
        a handshake runs on its connection's request thread, which closing a server joins)."""
        self._close_silently(lambda entry: entry.handshaking)

    def stop(self) -> None:
        """Stop the watchdog and close every connection still negotiating, unreported.

        The node is stopping: aborting such a connection's association waits for its
        reader, which is blocked on a read until the idle time-out (60 s by default).
        """
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._close_silently(lambda _entry: True)
        if self._watchdog is not None:
            self._watchdog.join(5)
            self._watchdog = None

    def _close_silently(self, which: Callable[[_Entry], bool]) -> None:
        with self._condition:
            closing = [raw for raw, entry in self._entries.items() if which(entry)]
            for raw in closing:
                del self._entries[raw]
        for raw in closing:
            with contextlib.suppress(OSError):  # closed already
                socket.socket.shutdown(raw, socket.SHUT_RDWR)

    def _watch(self) -> None:
        while True:
            with self._condition:
                if self._stopping:
                    return
                now = time.monotonic()
                expired = [(raw, e) for raw, e in self._entries.items() if e.deadline <= now]
                for raw, _entry in expired:
                    del self._entries[raw]
                if not expired:
                    next_deadline = min((e.deadline for e in self._entries.values()), default=None)
                    wait = None if next_deadline is None else max(0.0, next_deadline - now)
                    self._condition.wait(wait)
                    continue
            for raw, entry in expired:
                self._close(raw, entry)

    def _close(self, raw: Any, entry: _Entry) -> None:
        # The reader then sees the connection closed and pynetdicom ends it (``scp``).
        # The descriptor is shut down, not through ``SSLSocket.shutdown``: that drops the
        # TLS state under the thread reading it, whose next ``recv`` then reads the raw
        # socket (and fails with a traceback) instead of seeing the end of the stream.
        try:
            socket.socket.shutdown(raw, socket.SHUT_RDWR)
        except OSError:
            return  # closed already: it was not waiting on us
        unfinished = ", its TLS handshake unfinished" if entry.handshaking else ""
        self._refusals.report(
            "connection_refused",
            Reason.NEGOTIATION_TIMEOUT,
            peer_ae=entry.calling_ae(),
            peer_host=entry.host,
            detail=f"no association negotiated within {self._timeout:g} s{unfinished}",
        )
