"""Wake the cluster's workers when work is queued: PostgreSQL ``LISTEN/NOTIFY``.

A transaction that queues work (a completed series to route, a job, a send) also sends
a notification on the ``dicomnode`` channel, which PostgreSQL delivers to every node
when, and only if, the transaction commits. Each node listens on its own connection and
wakes the matching local worker, so a job queued by one node's router starts on a GPU
node at once instead of at its next poll. The polls stay, as the fallback: a node that
missed a notification (its listening connection was down) finds the work anyway.

On SQLite there is one node and it wakes its workers in-process, as before; ``notify``
does nothing there.
"""

from __future__ import annotations

import os
import select as selectors
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dicomnode.logs import get_logger

log = get_logger(__name__)

CHANNEL = "dicomnode"
ROUTE = "route"
JOB = "job"
SEND_PREFIX = "send:"  # + the destination's name
_WAIT_S = 5.0  # how long one wait for notifications blocks before it looks again
_RETRY_S = 5.0


def notify(session: Session, payload: str) -> None:
    """Announce ``payload`` to every node once the caller's transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )


class Listener:
    """A thread that listens on its own connection and calls ``on_notice(payload)``.

    It waits in ``select`` on the connection's socket and on a wake-up pipe, so that
    ``stop`` ends it at once (a node stopping must not wait out a poll).
    """

    def __init__(self, engine: Engine, on_notice: Callable[[str], None]) -> None:
        self._engine = engine
        self._on_notice = on_notice
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)

    @staticmethod
    def wanted(engine: Engine) -> bool:
        return engine.dialect.name == "postgresql"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread; a second call (a node stopped twice) does nothing."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():  # else the thread may still select on them
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception:  # the root of this thread: the polls cover the gap
                log.warning("notify_listener_failed", exc_info=True)
                self._wait(_RETRY_S)

    def _wait(self, seconds: float, connection: Any = None) -> bool:
        """Wait for the connection to have input (True) or for ``seconds`` or a stop."""
        watched = [self._wake_read] if connection is None else [self._wake_read, connection]
        ready, _, _ = selectors.select(watched, [], [], seconds)
        return connection is not None and connection in ready and self._wake_read not in ready

    def _listen(self) -> None:
        raw = self._engine.raw_connection()
        try:
            native: Any = raw.driver_connection
            psycopg3 = self._engine.dialect.driver == "psycopg"
            if psycopg3:
                native.autocommit = True
                native.execute(f"LISTEN {CHANNEL}")
            else:  # psycopg2
                native.set_session(autocommit=True)
                with native.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
            log.info("notify_listening", channel=CHANNEL)
            while not self._stopping.is_set():
                if not self._wait(_WAIT_S, native):
                    continue
                if psycopg3:
                    for notice in native.notifies(timeout=0.0):
                        self._deliver(notice.payload)
                else:
                    native.poll()
                    while native.notifies:
                        self._deliver(native.notifies.pop(0).payload)
        finally:
            raw.invalidate()  # its session state (LISTEN, autocommit) must not be pooled

    def _deliver(self, payload: str) -> None:
        try:
            self._on_notice(payload)
        except Exception:  # one wake's failure: the polls still find the work
            log.exception("notify_delivery_failed", payload=payload)
