"""A socket that reads PDU headers as their bytes arrive, and refuses before buffering.

pynetdicom reads a PDU by its header's length: a header claiming 4 GiB makes it (and
the adapted reader) keep whatever follows, and a P-DATA-TF far over the maximum length
the node advertised is accepted. Both reading paths (``adapt.direct`` and pynetdicom's
stock one) read through ``AssociationSocket.socket``, so the node puts this wrapper
there when a connection opens and sees every byte first, on either path:

- a P-DATA-TF longer than ``node.max_pdu_bytes`` (the Maximum Length the node sent in
  its A-ASSOCIATE-AC, PS3.8 D.1), or any other PDU longer than ``NEGOTIATION_PDU_BYTES``:
  A-ABORT (source: service provider, reason: invalid PDU parameter value, PS3.8 9.3.8)
  and the connection closed, before any byte of its body is handed on;
- a first PDU that is not an A-ASSOCIATE-RQ, or one that ``associate_rq`` finds
  malformed: A-ABORT or A-ASSOCIATE-RJ, and closed.

A refused connection reads as closed by the peer to pynetdicom, which then ends the
association its usual way. Costs: a few comparisons per ``recv``; the A-ASSOCIATE-RQ is
copied once (at most ``NEGOTIATION_PDU_BYTES``).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from dicomnode.dicom import associate_rq
from dicomnode.dicom.refusals import Reason

# An A-ASSOCIATE-RQ with 128 contexts of 64-byte UIDs and a dozen syntaxes each is ~100 KB.
NEGOTIATION_PDU_BYTES = 1024 * 1024
_HEADER = struct.Struct(">BBL")
_ASSOCIATE_RQ, _ASSOCIATE_RJ, _P_DATA_TF, _ABORT = 0x01, 0x03, 0x04, 0x07
_TLS_HANDSHAKE_RECORD = 0x16  # a TLS record's content type, where a PDU type would be
_SERVICE_PROVIDER, _INVALID_PARAMETER_VALUE = 0x02, 0x06  # PS3.8 9.3.8
_SEND_TIMEOUT = 2.0  # seconds to get a refusal out to a peer that does not read

# (reason, detail, calling AE title as far as known) -> None
RefusalHook = Callable[[Reason, str, str], None]


def abort_pdu(source: int = _SERVICE_PROVIDER, reason: int = _INVALID_PARAMETER_VALUE) -> bytes:
    return _HEADER.pack(_ABORT, 0, 4) + bytes([0, 0, source, reason])


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    return _HEADER.pack(_ASSOCIATE_RJ, 0, 4) + bytes([0, result, source, reason])


class GuardedSocket:
    """A connected socket whose incoming PDUs are checked as they are read."""

    def __init__(self, raw: socket.socket, max_pdu_bytes: int, refused: RefusalHook) -> None:
        self.raw = raw
        self._max_pdu = max_pdu_bytes
        self._refused = refused
        self._head = bytearray()  # a PDU header still arriving
        self._left = 0  # bytes of the current PDU's body not read yet
        self._first = True  # the next PDU is the connection's first
        self._request: bytearray | None = None  # the A-ASSOCIATE-RQ while it arrives
        self.calling_ae = ""
        self.refusal: Reason | None = None
        # Passed straight to the socket: bound here, they cost no Python call of ours
        # (``adapt.direct`` asks for TCP_QUICKACK after every read).
        self.setsockopt = raw.setsockopt
        self.fileno = raw.fileno
        self.sendall = raw.sendall
        self.send = raw.send
        self.shutdown = raw.shutdown
        self.close = raw.close
        # Decrypted bytes a TLS socket holds, which select() cannot see (``adapt.reactor``).
        self.pending: Any = getattr(raw, "pending", None)

    # -- what pynetdicom and ``adapt`` call --------------------------------------------

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.refusal is not None:
            return b""
        data = self.raw.recv(size, flags)
        count = len(data)
        if count < self._left:  # inside a PDU's body (or nothing read): nothing to check
            self._left -= count
            if self._request is not None:
                self._request += data
        elif count and not self._inspect(memoryview(data)):
            return b""
        return data

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        if self.refusal is not None:
            return 0
        count = self.raw.recv_into(buffer, size, flags)
        if count < self._left and self._request is None:  # inside a PDU's body
            self._left -= count
        elif count:
            with memoryview(buffer) as view, view.cast("B")[:count] as read:
                if not self._inspect(read):
                    return 0
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    # -- the checks ------------------------------------------------------------------

    def _inspect(self, data: memoryview) -> bool:
        """Follow the PDU boundaries through ``data``; False: refused (and closed)."""
        position, end = 0, len(data)
        while position < end:
            if self._left == 0 and not self._head and end - position >= _HEADER.size:
                # A whole header in the bytes read: the common case, read in place.
                pdu_type, _, length = _HEADER.unpack_from(data, position)
                head = data[position : position + _HEADER.size]
                position += _HEADER.size
                if not self._begin(pdu_type, length, head):
                    return False
            elif self._left == 0:
                take = min(_HEADER.size - len(self._head), end - position)
                self._head += data[position : position + take]
                position += take
                if len(self._head) < _HEADER.size:
                    return True
                pdu_type, _, length = _HEADER.unpack(self._head)
                whole = bytes(self._head)
                self._head.clear()
                if not self._begin(pdu_type, length, whole):
                    return False
            else:
                take = min(self._left, end - position)
                if self._request is not None:
                    self._request += data[position : position + take]
                self._left -= take
                position += take
            if self._left == 0 and self._request is not None and not self._check_request():
                return False
        return True

    def _begin(self, pdu_type: int, length: int, head: bytes | memoryview) -> bool:
        """A PDU header has arrived: check its type and length."""
        first, self._first = self._first, False
        if first and pdu_type == _TLS_HANDSHAKE_RECORD:
            return self._refuse(
                Reason.TLS_ON_PLAIN_PORT,
                "a TLS handshake on the plain DICOM port (DICOM-TLS is on node.tls.port)",
                b"",
            )
        if first and pdu_type != _ASSOCIATE_RQ:
            return self._refuse(
                Reason.MALFORMED_REQUEST, f"first PDU of type 0x{pdu_type:02X}", abort_pdu()
            )
        limit = self._max_pdu if pdu_type == _P_DATA_TF else NEGOTIATION_PDU_BYTES
        if length > limit:
            return self._refuse(
                Reason.PDU_TOO_LONG,
                f"PDU of type 0x{pdu_type:02X} claims {length} bytes, more than {limit}",
                abort_pdu(),
            )
        self._left = length
        if first:
            self._request = bytearray(head)
        return True

    def _check_request(self) -> bool:
        request, self._request = self._request, None
        assert request is not None  # only called once a request is complete
        self.calling_ae = associate_rq.calling_ae_title(request)
        problem = associate_rq.problem(request)
        if problem is None:
            return True
        answer = (
            abort_pdu()
            if problem.abort
            else reject_pdu(
                associate_rq.REJECTED_PERMANENT,
                associate_rq.SOURCE_SERVICE_USER,
                problem.reject_reason,
            )
        )
        return self._refuse(Reason.MALFORMED_REQUEST, problem.detail, answer)

    def _refuse(self, reason: Reason, detail: str, answer: bytes) -> bool:
        """Answer, close, and report; what was read of this PDU never reaches the reader."""
        self.refusal = reason
        try:
            self.raw.settimeout(_SEND_TIMEOUT)
            self.raw.sendall(answer)
        except OSError:
            pass  # the peer is gone already: closing is all that is left
        with contextlib.suppress(OSError):  # closed already
            self.raw.shutdown(socket.SHUT_RDWR)
        self._refused(reason, detail, self.calling_ae)
        return False


def guarded(raw: Any) -> GuardedSocket | None:
    """The guard around an ``AssociationSocket.socket``, if it has one."""
    return raw if isinstance(raw, GuardedSocket) else None
