"""Why an association we requested did not work, in words an operator can act on.

pynetdicom tells a requestor only ``is_established``, ``is_rejected`` or ``is_aborted``:
a closed port, a peer that aborts, one that never answers and one that accepts the
association but none of its presentation contexts all read "aborted". The outbox must
tell them apart: a refused presentation context is permanent (the same proposal cannot
succeed later), the others are temporary. A ``Trace`` watches each association for what
pynetdicom drops: why the TCP connect failed (it logs the error and moves on), and which
abort action its state machine took first (PS3.8 9.2, Table 9-10, AA-1 to AA-8).
Over DICOM-TLS it also keeps why the handshake failed, or the alert the peer sent once
it had our certificate (TLS 1.3 refuses a client certificate after our handshake ended):
a certificate that does not verify will not verify on the next try either.

The words come from PS3.8: 9.3.4 (A-ASSOCIATE-RJ result, source and reason, Table 9-21)
and 9.3.8 (A-ABORT source and reason, Table 9-26).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicomnode.dicom import tls
from dicomnode.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    PeerError,
    PeerTLSError,
    PeerUnreachableError,
)

# PS3.8 Table 9-21: A-ASSOCIATE-RJ Source, and Reason/Diag. per source.
_REJECT_SOURCES = {
    1: "service-user",
    2: "service-provider (ACSE)",
    3: "service-provider (presentation)",
}
_REJECT_REASONS = {
    1: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        7: "called-AE-title-not-recognized",
    },
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {1: "temporary-congestion", 2: "local-limit-exceeded"},
}
# What to do about the rejections a configuration causes: (source, reason) -> the fix.
_REJECTION_FIXES = {
    (1, 3): "the peer does not know our AE title (calling_ae); add it on the peer",
    (1, 7): "the peer is not called that; check the AE title we call (ae_title)",
}
# PS3.8 Table 9-26: A-ABORT Source, and Reason/Diag. (meaningful for source 2 only).
_ABORT_SOURCES = {0: "service-user", 2: "service-provider"}
_ABORT_REASONS = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    4: "unrecognized-PDU-parameter",
    5: "unexpected-PDU-parameter",
    6: "invalid-PDU-parameter-value",
}
# The abort actions of PS3.8 Table 9-10 that the peer's side caused.
_PEER_ABORTED = "AA-3"  # an A-ABORT PDU arrived
_PEER_CLOSED = "AA-4"  # the transport connection closed under us
_PEER_INVALID = "AA-8"  # the peer sent a PDU we could not accept; we aborted
# A rejection "service-user, no-reason-given" is how DCMTK (and products built on it)
# answer a proposal none of whose contexts they accept: the reason then says what it was.
_BARE_REJECTION = (1, 1)
# Whoever waits for a trace to settle waits at most this long: the state machine's
# thread records an abort action just after it acts.
SETTLE_SECONDS = 2.0
_POLL_SECONDS = 0.01
# A TLS alert that explains a failed send is already in our buffer when the send fails;
# this only bounds the read should the peer have gone without closing.
_ALERT_READ_SECONDS = 1.0


class Trace:
    """What one association attempt saw that pynetdicom does not keep."""

    def __init__(self) -> None:
        self.connect_error: OSError | None = None  # the TCP connect's
        self.tls_error: OSError | None = None  # the handshake's, or the peer's TLS alert
        self.connected = False
        self.aborts: list[str] = []  # abort actions, in the order the state machine took them
        self.abort_primitive: A_ABORT | A_P_ABORT | None = None
        self.ended = threading.Event()

    def handlers(self) -> list[Any]:
        """pynetdicom event handlers that fill this trace."""
        return [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_FSM_TRANSITION, self._on_transition),
            (evt.EVT_ACSE_RECV, self._on_acse),
        ]

    def _on_open(self, _event: Any) -> None:
        self.connected = True

    def _on_transition(self, event: Any) -> None:
        action = str(event.action)
        if action.startswith("AA-"):
            self.aborts.append(action)
            self.ended.set()

    def _on_acse(self, event: Any) -> None:
        primitive = event.primitive
        if isinstance(primitive, (A_ABORT, A_P_ABORT)) and self.abort_primitive is None:
            self.abort_primitive = primitive

    def established(self, assoc: Any) -> None:
        """Stop watching state transitions: during transfer there is one per PDU, and an
        event per PDU costs several per cent of a send's throughput (measured). What can
        end a transfer is read from the abort primitive instead (``ended_early``)."""
        assoc.unbind(evt.EVT_FSM_TRANSITION, self._on_transition)

    def ended_early(self, assoc: Any, request: str, timeout_seconds: float) -> str:
        """What ended an association during a request: the peer, or our wait for it.

        A peer's A-ABORT, or its closing the connection, leaves an abort primitive for
        us (PS3.8 AA-3, AA-4) before or as the DUL ends; our own abort after a timeout
        leaves none. The DUL ends either way, so the wait is short.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        while self._abort_seen(assoc) is None and assoc.dul.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(_POLL_SECONDS)
        primitive = self._abort_seen(assoc)
        if primitive is None:
            time.sleep(_POLL_SECONDS)  # the association thread may be taking it just now
            primitive = self._abort_seen(assoc)
        if isinstance(primitive, A_P_ABORT) and not primitive.provider_reason:
            return "aborted by peer (the connection closed)"
        if primitive is not None:
            return f"aborted by peer ({abort_words(primitive)})"
        return f"timed out: no {request} response within {timeout_seconds:g} s"

    def _abort_seen(self, assoc: Any) -> A_ABORT | A_P_ABORT | None:
        primitive = self.abort_primitive or _peek(assoc)
        return primitive if isinstance(primitive, (A_ABORT, A_P_ABORT)) else None

    def peer_ended(self, assoc: Any) -> str | None:
        """Words for how the peer ended the association, or None if it did not."""
        first = next(
            (a for a in self.aborts if a in {_PEER_ABORTED, _PEER_CLOSED, _PEER_INVALID}), None
        )
        if first == _PEER_CLOSED:
            return "aborted by peer (it closed the connection)"
        if first == _PEER_INVALID:
            return "aborted: the peer sent a PDU that breaks the protocol"
        if first == _PEER_ABORTED:
            primitive = self.abort_primitive or _peek(assoc)
            return f"aborted by peer ({abort_words(primitive)})"
        return None


class TracingAE(AE):
    """An AE whose associations' sockets keep why their connect failed, in ``trace``.

    pynetdicom builds a requestor's socket in ``AE._create_socket``; one AE makes one
    association here (``scu`` makes an AE per association), so one trace serves it.
    With ``tls_args`` the socket is wrapped here, before pynetdicom's thread connects it,
    so that the TLS socket carries the trace into its handshake (pynetdicom only logs
    the handshake's error).
    """

    def __init__(self, ae_title: str) -> None:
        super().__init__(ae_title=ae_title)
        self.trace = Trace()

    def _create_socket(
        self, assoc: Any, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        sock = _TracedAssociationSocket(assoc, self.trace, address)
        if tls_args is not None and sock.socket is not None:
            context, server_name = tls_args
            sock.socket = _traced_tls_socket(context, sock.socket, server_name, self.trace)
        sock.tls_args = None  # wrapped already: the handshake runs in its connect
        return sock


class _TracedSocket(socket.socket):
    """A socket that tells its trace why ``connect`` failed before raising."""

    trace: Trace

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.trace.connect_error = exc
            raise


class _TracedAssociationSocket(AssociationSocket):
    def __init__(self, assoc: Any, trace: Trace, address: AddressInformation) -> None:
        self._trace = trace  # before super().__init__, which creates the socket
        super().__init__(assoc, address=address)

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        plain = super()._create_socket(address)
        timeout = plain.gettimeout()
        traced = _TracedSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        traced.trace = self._trace
        traced.settimeout(timeout)
        return traced


class _TracedSSLSocket(ssl.SSLSocket):
    """A TLS socket that tells its trace why its handshake failed, or which alert the
    peer sent after it, before raising (the handshake runs inside ``connect``)."""

    trace: Trace | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            if self.trace is not None and self.trace.tls_error is None:
                self.trace.connect_error = exc
            raise

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            if self.trace is not None:
                self.trace.tls_error = exc
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self._alerted(exc)
            raise

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except ssl.SSLError as exc:
            self._alerted(exc)
            raise

    def send(self, data: Any, flags: int = 0) -> int:  # sendall sends through it too
        try:
            return super().send(data, flags)
        except ssl.SSLError:
            self._read_alert()
            raise

    def _alerted(self, exc: ssl.SSLError) -> None:
        if self.trace is not None and self.trace.tls_error is None and _tls_permanent(exc):
            self.trace.tls_error = exc

    def _read_alert(self) -> None:
        """A peer that refuses our certificate after a TLS 1.3 handshake sends an alert
        and closes: our next send fails with a bare EOF, and the alert, which says why,
        waits unread. Read it (the peer has closed, so this does not wait)."""
        if self.trace is None or self.trace.tls_error is not None:
            return
        try:
            self.settimeout(_ALERT_READ_SECONDS)
            super().recv(1)
        except ssl.SSLError as exc:
            self._alerted(exc)
        except (OSError, ValueError):
            pass  # no alert to read: the failure stays the send's


def _traced_tls_socket(
    context: ssl.SSLContext, plain: socket.socket, server_name: str, trace: Trace
) -> ssl.SSLSocket:
    """``plain``, not yet connected, wrapped for the client side with ``trace`` on it.

    ``sslsocket_class`` is the documented way to have ``wrap_socket`` make a subclass;
    the traced class behaves as its parent where no trace is set, so the setting is
    harmless on a context that others share.
    """
    context.sslsocket_class = _TracedSSLSocket
    wrapped = context.wrap_socket(plain, server_side=False, server_hostname=server_name)
    assert isinstance(wrapped, _TracedSSLSocket)
    wrapped.trace = trace
    return wrapped


def _tls_permanent(exc: OSError) -> bool:
    """Whether a TLS failure will recur on every try until someone changes a certificate
    or a setting: a certificate that does not verify, an alert from the peer, no shared
    protocol or cipher, a peer that does not speak TLS. A connection that dropped or
    timed out mid-handshake is temporary."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return False
    if isinstance(exc, ssl.SSLError):
        return "EOF" not in str(exc.reason or "").upper()
    return False


def _tls_failure(exc: OSError, address: str, source: str) -> PeerTLSError:
    words = tls.describe(exc).rstrip(".")
    reason = str(getattr(exc, "reason", "") or "")
    if "ALERT" in reason:
        words = f"the peer sent {words}"  # e.g. it refused our certificate, or its absence
    elif reason == "WRONG_VERSION_NUMBER":
        words += ": the peer does not answer in TLS (a port without DICOM-TLS?)"
    elif not _tls_permanent(exc) and not isinstance(exc, TimeoutError):
        words += " (does that port take DICOM-TLS?)"
    where = f" ({source})" if source else ""
    return PeerTLSError(f"{address}: TLS: {words}{where}", _tls_permanent(exc))


def failure(
    trace: Trace,
    assoc: Any,
    address: str,
    connect_timeout_seconds: float,
    network_timeout_seconds: float,
    describe_proposal: Callable[[], str] | None = None,
    tls_source: str = "",
) -> PeerError:
    """The error for an association that was not established, in the words of the
    outbox's reasons: connection refused, association rejected (source, reason),
    aborted by peer, timed out; over TLS, why the handshake failed (``tls_source``
    names where the TLS settings come from, e.g. ``destinations.pacs.tls``)."""
    if trace.tls_error is not None:
        return _tls_failure(trace.tls_error, address, tls_source)
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        words = f"association rejected ({rejection_words(answer)})"
        source_reason = (
            getattr(answer, "result_source", None),
            getattr(answer, "diagnostic", None),
        )
        if describe_proposal is not None and source_reason == _BARE_REJECTION:
            words += f"; we proposed {describe_proposal()}"
        elif source_reason in _REJECTION_FIXES:
            words += f": {_REJECTION_FIXES[source_reason]}"
        permanent = getattr(answer, "result", None) == 1  # PS3.8 9.3.4: 1 rejected-permanent
        return AssociationRejectedError(f"{address}: {words}", permanent)
    if not trace.connected:
        error = trace.connect_error
        if isinstance(error, ConnectionRefusedError):
            return PeerUnreachableError(f"{address}: connection refused")
        if isinstance(error, TimeoutError):
            return PeerUnreachableError(
                f"{address}: timed out: no connection within {connect_timeout_seconds:g} s"
            )
        detail = f" ({error.strerror or error})" if error is not None else ""
        return PeerUnreachableError(f"{address}: cannot connect{detail}")
    trace.ended.wait(SETTLE_SECONDS)
    cause = trace.peer_ended(assoc)
    if cause is not None:
        return AssociationAbortedError(f"{address}: {cause}")
    return PeerUnreachableError(
        f"{address}: timed out: no answer to the association request "
        f"within {network_timeout_seconds:g} s"
    )


def rejection_words(answer: Any) -> str:
    """``source, reason; permanent|transient`` of an A-ASSOCIATE-RJ (PS3.8 Table 9-21)."""
    result = getattr(answer, "result", None)
    source = getattr(answer, "result_source", None)
    reason = getattr(answer, "diagnostic", None)
    source_words = _REJECT_SOURCES.get(source or 0, f"source {source}")
    reason_words = _REJECT_REASONS.get(source or 0, {}).get(reason or 0, f"reason {reason}")
    # Result 1 is rejected-permanent, 2 rejected-transient.
    kind = "permanent" if result == 1 else "transient"
    return f"{source_words}, {reason_words}; {kind}"


def abort_words(primitive: Any) -> str:
    """The source (and a provider's reason) of an A-ABORT (PS3.8 Table 9-26)."""
    if isinstance(primitive, A_P_ABORT):
        reason = primitive.provider_reason or 0
        return f"service-provider, {_ABORT_REASONS.get(reason, f'reason {reason}')}"
    if isinstance(primitive, A_ABORT):
        source = primitive.abort_source or 0
        return _ABORT_SOURCES.get(source, f"source {source}")
    return "no reason given"


def accepted_nothing(assoc: Any) -> bool:
    """The peer answered A-ASSOCIATE-AC but accepted none of the proposed contexts."""
    answer = getattr(assoc.acceptor, "primitive", None)
    return isinstance(answer, A_ASSOCIATE) and answer.result == 0 and not assoc.accepted_contexts


def _peek(assoc: Any) -> Any:
    try:
        return assoc.dul.peek_next_pdu()
    except Exception:  # noqa: BLE001 - a best effort for words; the DUL may be gone
        return None
