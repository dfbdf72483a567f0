"""Event-driven reactors for pynetdicom 3.0.4, in place of its 1 ms polling loops.

pynetdicom runs two threads per association, and both poll:

- the DUL thread (``DULServiceProvider.run_reactor``) sleeps 1 ms whenever a loop found
  neither a primitive to send nor a PDU to read;
- the association thread (``Association._run_reactor``) sleeps 1 ms before every look at
  its DIMSE queue.

A C-STORE crosses these loops three times (request in, handler, response out): up to
~3 ms of idle latency per instance, against 3-7 ms of real work, and ~1,000 wake-ups a
second per thread while an association idles. Here each thread waits on what it serves:

- the DUL in ``select()`` on its socket and a wake-up pipe, written whenever something
  is put on its input queues (primitives from the user, state-machine events) or it is
  told to stop;
- the association thread on a ``threading.Event``, set when a DIMSE message or an ACSE
  primitive arrives, when the association is killed and when its DUL ends.

Both still wake every ``MAX_WAIT`` seconds, so the ARTIM and network-idle timers and any
state changed behind their backs are seen as before, only without the 1 ms busy loop.

The two loops are pynetdicom 3.0.4's own, with only the waiting changed (and its
comments dropped), and two races closed: the association thread could take a C-STORE
response meant for ``send_c_store`` (``_leave_pause``; ``scu._return_stolen_responses``
stays, for stock loops); and a requestor whose peer rejects and hangs up at once could
report an abort instead of the rejection (``_may_read``), which a DUL that answers
without its 1 ms sleeps made frequent (7 times in 40 against a refusing storescp).
Installed by ``dicomnode.dicom.adapt.install``, which checks the version they copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

# pynetdicom's own loggers, for the messages its loops log (kept word for word).
_DUL_LOG = logging.getLogger("pynetdicom.dul")
_ASSOC_LOG = logging.getLogger("pynetdicom.association")

MAX_WAIT = 0.05  # seconds a reactor sleeps with nothing to do; bounds any missed wake-up

_WAKER = "_dicomnode_waker"  # on a DULServiceProvider
_USER_WAITING = "_dicomnode_user_waiting"  # on a DULServiceProvider: see _may_read
_WAKE = "_dicomnode_wake"  # on an Association
_READABLE = "_dicomnode_readable"  # on a DULServiceProvider: select() just saw the socket
# On a DULServiceProvider: bytes read from its socket that are not yet a whole PDU's
# (``direct`` reads ahead). The loop serves them before it waits on the socket again.
INBOX = "_dicomnode_inbox"
_installed = False


def installed() -> bool:
    """Whether this process runs the adapted loops."""
    return _installed


def install() -> None:
    """Replace the two polling loops (idempotent); the caller checks the version."""
    global _installed
    if not _installed:
        _patch_dul()
        _patch_association()
        _installed = True


class NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``notify`` after every put, so its reader can sleep until then."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._notify()


class Waker:
    """A pipe that interrupts a ``select()``.

    Writers hold the lock so that no byte can reach a descriptor number the reactor has
    closed and the process has reused (a spool file, say).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_fd = -1
        self._write_fd = -1

    def open(self) -> int:
        with self._lock:
            if self._read_fd < 0:
                self._read_fd, self._write_fd = os.pipe()
                os.set_blocking(self._read_fd, False)
                os.set_blocking(self._write_fd, False)
            return self._read_fd

    def wake(self) -> None:
        with self._lock:
            if self._write_fd >= 0:
                # A full pipe already holds wake-ups enough.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            for fd in (self._read_fd, self._write_fd):
                if fd >= 0:
                    os.close(fd)
            self._read_fd = self._write_fd = -1


# -- the DUL thread -------------------------------------------------------------------


def _patch_dul() -> None:
    stock_init = DULServiceProvider.__init__
    stock_kill = DULServiceProvider.kill_dul
    stock_stop = DULServiceProvider.stop_dul

    stock_receive = DULServiceProvider.receive_pdu

    def init(self: DULServiceProvider, assoc: Association) -> None:
        stock_init(self, assoc)
        waker = Waker()
        setattr(self, _WAKER, waker)
        setattr(self, _USER_WAITING, threading.Event())
        self.to_provider_queue = NotifyingQueue(waker.wake)
        self.event_queue = NotifyingQueue(waker.wake)

    def kill_dul(self: DULServiceProvider) -> None:
        stock_kill(self)
        getattr(self, _WAKER).wake()

    def stop_dul(self: DULServiceProvider) -> bool:
        # The stock stop_dul sets the flag, then waits for the thread: wake it first.
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            getattr(self, _WAKER).wake()
        return bool(stock_stop(self))

    def receive_pdu(
        self: DULServiceProvider, wait: bool = False, timeout: float | None = None
    ) -> Any:
        waiting: threading.Event = getattr(self, _USER_WAITING)
        if not waiting.is_set():
            waiting.set()
            getattr(self, _WAKER).wake()
        return stock_receive(self, wait, timeout)

    DULServiceProvider.__init__ = init  # type: ignore[method-assign]  # see module doc
    DULServiceProvider.kill_dul = kill_dul  # type: ignore[method-assign]
    DULServiceProvider.stop_dul = stop_dul  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = _dul_run_reactor  # type: ignore[method-assign]
    DULServiceProvider.receive_pdu = receive_pdu  # type: ignore[method-assign]
    DULServiceProvider._is_transport_event = _is_transport_event  # type: ignore[method-assign]


def _dul_run_reactor(self: DULServiceProvider) -> None:
    waker: Waker = getattr(self, _WAKER)
    waker.open()
    try:
        _dul_loop(self, waker)
    finally:
        waker.close()
        wake = getattr(self.assoc, _WAKE, None)
        if wake is not None:
            wake.set()  # the association thread checks dul.is_alive()


def _dul_loop(self: DULServiceProvider, waker: Waker) -> None:
    """pynetdicom 3.0.4's ``run_reactor``, waiting in ``_dul_wait`` instead of sleeping."""
    self._idle_timer.start()
    idle = False
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
        if idle:
            _dul_wait(self, waker)
        if self._kill_thread:
            break
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        try:
            if self._process_recv_primitive():
                pass
            elif _may_read(self) and self._is_transport_event():
                self._idle_timer.restart()
        except Exception as exc:  # noqa: BLE001 - as pynetdicom: abort on any failure
            _abort_on_error(self, exc)
            return
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        self.state_machine.do_action(event)
        idle = False


def _is_transport_event(self: DULServiceProvider) -> bool:
    """pynetdicom 3.0.4's, reading bytes already read first and trusting ``_dul_wait``.

    The stock check asks ``select()`` again (``socket.ready``) even when ``_dul_wait``
    has just seen the socket readable: a system call per PDU for nothing.
    """
    socket: Any = self.socket
    if getattr(self, INBOX, None):
        self._read_pdu_data()
        return True
    readable = getattr(self, _READABLE, False)
    if readable:
        setattr(self, _READABLE, False)
        readable = socket is not None and socket.socket is not None and socket._is_connected
    if socket and (readable or socket.ready):
        self._read_pdu_data()
        return True
    if self.state_machine.current_state == "Sta13":  # nothing more to read: close
        socket.close()
        return True
    return False


def _dul_wait(self: DULServiceProvider, waker: Waker) -> None:
    """Sleep until the socket is readable, something is queued, or a timer may fire."""
    if getattr(self, INBOX, None) and _may_read(self):
        return  # a PDU is (partly) read already: serve it first
    timeout = MAX_WAIT
    artim = self.artim_timer
    if artim._start_time is not None and artim._end_time is None:  # running
        timeout = min(timeout, max(0.0, artim.remaining))
    wake_fd = waker.open()
    watched: list[Any] = [wake_fd]
    assoc_socket = self.socket
    raw = getattr(assoc_socket, "socket", None)
    if raw is not None and getattr(assoc_socket, "_is_connected", False) and _may_read(self):
        pending = getattr(raw, "pending", None)  # an SSLSocket, or the guard around one
        if pending is not None and pending():
            # Decrypted bytes already buffered: select() cannot see them, nor can the
            # stock ``socket.ready`` through the guard (it asks an SSLSocket only).
            setattr(self, _READABLE, True)
            return
        watched.append(raw)
    try:
        ready, _, _ = select.select(watched, [], [], timeout)
    except (OSError, ValueError):
        return  # the socket closed under us: let the loop find out, as stock does
    for item in ready:
        if item is wake_fd:
            waker.drain()
        else:
            setattr(self, _READABLE, True)


def _may_read(self: DULServiceProvider) -> bool:
    """Whether to read the peer's answer now: not, as requestor, before the user waits.

    A requestor's ACSE sends A-ASSOCIATE-RQ, then checks that the socket is connected
    (an abort if not), then waits for the answer (``receive_pdu``). A peer that rejects
    and closes at once lets this thread read the A-ASSOCIATE-RJ and close the socket
    (AE-4) before that check: the check then fails, and the rejection is reported as an
    abort. So in Sta5 (awaiting A-ASSOCIATE-AC/RJ) the socket is read only once the user
    has called ``receive_pdu``; the answer waits in the kernel meanwhile, and timers and
    the user's own primitives (an A-ABORT) go on as usual.
    """
    if self.state_machine.current_state != "Sta5":
        return True
    waiting: threading.Event = getattr(self, _USER_WAITING)
    return waiting.is_set()


def _abort_on_error(self: DULServiceProvider, exc: Exception) -> None:
    """What pynetdicom 3.0.4 does when its reactor fails: A-ABORT and stop both threads."""
    _DUL_LOG.error("Exception in DUL.run(), aborting association")
    _DUL_LOG.exception(exc)
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    socket = self.socket
    if isinstance(socket, AssociationSocket):
        socket.send(abort_pdu.encode())
    self.assoc.is_aborted = True
    self.assoc.is_established = False
    self.assoc._kill = True
    self._kill_thread = True


# -- the association thread -------------------------------------------------------------


def _patch_association() -> None:
    stock_init = Association.__init__
    stock_kill = Association.kill

    def init(self: Association, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        wake = threading.Event()
        setattr(self, _WAKE, wake)
        self.dimse.msg_queue = NotifyingQueue(wake.set)
        self.dul.to_user_queue = NotifyingQueue(wake.set)

    def kill(self: Association) -> None:
        self._kill = True
        getattr(self, _WAKE).set()
        stock_kill(self)

    Association.__init__ = init  # type: ignore[method-assign]  # see module doc
    Association.kill = kill  # type: ignore[method-assign]
    Association._run_reactor = _association_run_reactor  # type: ignore[method-assign]


def _leave_pause(self: Association) -> None:
    """Resume only while no ``send_*()`` call holds the checkpoint; fixes a race.

    A ``send_*()`` call clears ``_reactor_checkpoint``, then waits for ``_is_paused``. The
    stock reactor sets ``_is_paused`` before it waits on the checkpoint and clears it only
    after: a reactor just released by the previous call still reads as paused, so the
    next call goes ahead, and the reactor takes its response off the DIMSE queue and
    drops it (pydicom/pynetdicom#435, #875; ``scu._return_stolen_responses``). Here the
    reactor says it is running first, then looks at the checkpoint: whichever of the two
    threads looks second sees the other's write, so at most one of them goes on.
    """
    while True:
        self._is_paused = False
        if self._reactor_checkpoint.is_set():
            return
        self._is_paused = True
        self._reactor_checkpoint.wait()


def _association_run_reactor(self: Association) -> None:
    """pynetdicom 3.0.4's ``_run_reactor``, waiting on an event instead of sleeping.

    While it waits it counts as paused (``_is_paused``): it touches no queue then, so a
    ``send_*()`` call need not wait for it to come round to its checkpoint.
    """
    wake: threading.Event = getattr(self, _WAKE)
    self._is_paused = False
    idle = False
    while not self._kill:
        self._is_paused = True
        if idle:
            wake.wait(MAX_WAIT)
        wake.clear()
        _leave_pause(self)

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, int(context_id or 0))
            idle = False
        else:
            idle = True

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            _ASSOC_LOG.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            _ASSOC_LOG.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            _ASSOC_LOG.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return
