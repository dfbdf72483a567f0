"""C-STORE requests served on the connection's own thread, for pynetdicom 3.0.4.

In pynetdicom a received instance crosses two threads and four layers: the DUL thread
reads each PDU, decodes it into a ``P_DATA_TF`` object and a primitive, runs the state
machine (DT-2) and queues the assembled request; the association thread takes it,
looks up the service class, builds a response primitive (validating its UIDs with
regular expressions), fires ``EVT_C_STORE`` and queues the response back to the DUL
thread, which wakes and sends it. On small instances that machinery was about a third of
the node's Python time, and two thread hand-offs per instance.

Here, once an association is established, the DUL thread reads a P-DATA-TF PDU's items
with ``struct``, gathers a C-STORE request's dataset fragments, calls the SCP's store
function itself and sends the response as DT-1 would: same bytes on the wire (the
response command set is ``commandset``'s, tested byte-equal to pynetdicom's), same
association state. What it serves: a C-STORE request whose command set arrives whole as
the first item of a P-DATA-TF, on an accepted storage context, with plain UIDs, while
nobody listens for the PDU- and DIMSE-level events this skips. Everything else (C-ECHO,
a command set in pieces, anything before ``is_established``, every other PDU) goes to
pynetdicom's own path, decoded from the same bytes. A message served here that breaks
the fragment rules of PS3.8 E.2 half way is a protocol error: the association is
aborted, as pynetdicom's reactor does on any failure.

Memory: each fragment kept counts against the node's ``DatasetBudget`` (per instance and
for all associations together); a dataset that would pass it keeps no further fragment
and is answered 0xA700 when its last one arrives, the association going on. A request
left to pynetdicom's path (a command set in pieces) may gather at most the per-instance
maximum before the association is aborted. PDU lengths are checked before this reads
them (``dicomnode.dicom.guard``).

PDUs are read through one buffer per connection (the DUL's inbox, which ``reactor``'s
loop serves before it waits on the socket again): what has arrived is taken in one
``recv``, so a C-STORE's command set and dataset, sent back to back, cost one read
instead of a header read and a body read each.

Installed with ``reactor`` and ``pdata``, under the same version guard.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicomnode.dicom import tcp
from dicomnode.dicom.adapt import commandset, pdata, reactor
from dicomnode.dicom.limits import DatasetBudget
from dicomnode.dicom.refusals import Reason

# (association, SOP class UID, SOP instance UID, transfer syntax UID, dataset bytes)
# -> (status, error comment or None). It must not raise: a failure is a status.
StoreFunction = Callable[[Association, str, str, str, memoryview], tuple[int, str | None]]
# (association, SOP class UID, SOP instance UID, why) -> (status, error comment): a
# dataset the budget refused, whose fragments were dropped. It must not raise either.
RefuseFunction = Callable[[Association, str, str, Reason], tuple[int, str | None]]

_HANDLER = "_dicomnode_direct_store"  # on an ApplicationEntity: its _Serving
_MESSAGE = "_dicomnode_direct_message"  # on a DULServiceProvider: the _Message arriving
_SERVED = "_dicomnode_direct_served"  # on a DULServiceProvider: whether _start may serve
_UNSERVED = "_dicomnode_direct_unserved"  # on a DULServiceProvider: bytes left to pynetdicom
_PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, PDU length (PS3.8 9.3.1)
_ITEM = struct.Struct(">LBB")  # PDV item length, context ID, message control header
_COMMAND_WHOLE, _DATASET_MORE, _DATASET_LAST = 0x03, 0x00, 0x02
_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))
_READ_AHEAD = 64 * 1024  # bytes asked of the socket when the inbox lacks a PDU header
_PREALLOCATE = 4 * 1024 * 1024  # a PDU buffer made ahead of its bytes (the node offers 128 KiB)
_VERIFICATION = "1.2.840.10008.1.1"
# Events fired on pynetdicom's path and not on this one: whoever binds one gets that path.
_SKIPPED_EVENTS = (
    evt.EVT_DATA_RECV,
    evt.EVT_PDU_RECV,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DATA_SENT,
    evt.EVT_PDU_SENT,
    evt.EVT_DIMSE_SENT,
)
_DUL_LOG = logging.getLogger("pynetdicom.dul")
_installed = False


class ProtocolError(Exception):
    """A message served here broke the P-DATA fragment rules; the DUL aborts."""


@dataclass(frozen=True, slots=True)
class _Serving:
    store: StoreFunction
    refuse: RefuseFunction
    budget: DatasetBudget


@dataclass(slots=True)
class _Message:
    """A C-STORE request whose dataset is arriving."""

    context_id: int
    request: commandset.StoreRequest
    transfer_syntax: str
    budget: DatasetBudget
    chunks: list[memoryview] = field(default_factory=list)
    held: int = 0  # bytes reserved in the budget
    refused: Reason | None = None  # the budget said no: fragments are dropped

    def keep(self, chunk: memoryview) -> None:
        if self.refused is not None:
            return
        refused = self.budget.reserve(self.held, len(chunk))
        if refused is None:
            self.held += len(chunk)
            self.chunks.append(chunk)
            return
        self.refused = refused
        self.release()

    def release(self) -> None:
        self.budget.release(self.held)
        self.held = 0
        self.chunks.clear()


def install() -> None:
    """Read PDUs through ``_read_pdu_data`` below (idempotent); the caller checks the version."""
    global _installed
    if not _installed:
        DULServiceProvider._read_pdu_data = _read_pdu_data  # type: ignore[method-assign]
        _installed = True


def installed() -> bool:
    return _installed


def serve_stores(
    ae: ApplicationEntity, store: StoreFunction, refuse: RefuseFunction, budget: DatasetBudget
) -> None:
    """Serve the C-STORE requests of ``ae``'s accepted associations with ``store``.

    Datasets are held within ``budget``; one that would pass it is answered by ``refuse``.
    """
    setattr(ae, _HANDLER, _Serving(store, refuse, budget))


def discard(dul: DULServiceProvider) -> None:
    """Give back what a message cut short (abort, closed connection) held of the budget."""
    message: _Message | None = getattr(dul, _MESSAGE, None)
    setattr(dul, _MESSAGE, None)
    if message is not None:
        message.release()


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom 3.0.4's ``_read_pdu_data`` (same events, same log lines), serving C-STOREs.

    The socket is read ahead, up to ``_READ_AHEAD`` bytes at a time, into the DUL's inbox:
    the PDUs a sender writes back to back (a C-STORE's command set and its dataset) take
    one ``recv`` instead of two per PDU. The rest of a large PDU is read straight into its
    own buffer. A P-DATA-TF that ``_serve`` takes is done with here; any other PDU is
    decoded and queued for the state machine exactly as before.
    """
    inbox: bytearray | None = getattr(self, reactor.INBOX, None)
    if inbox is None:
        inbox = bytearray()
        setattr(self, reactor.INBOX, inbox)
    raw: Any = self.socket.socket if self.socket is not None else None
    try:
        if len(inbox) < _PDU_HEADER.size and not _read_ahead(raw, inbox, _PDU_HEADER.size):
            inbox.clear()
            self.event_queue.put("Evt17")  # Transport connection closed
            return
        pdu_type, _, length = _PDU_HEADER.unpack_from(inbox)
        if pdu_type not in _PDU_TYPES:
            del inbox[: _PDU_HEADER.size]
            _DUL_LOG.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")  # Unrecognised or invalid PDU
            return
        size = _PDU_HEADER.size + length
        pdu = _take(raw, inbox, size)
    except (OSError, TimeoutError) as exc:
        inbox.clear()
        _closed_early(self, exc)
        return
    if len(pdu) < size:
        _DUL_LOG.error(
            f"The received PDU is shorter than expected ({len(pdu)} of {size} bytes received)"
        )
        self.event_queue.put("Evt17")
        return
    if pdu_type == _P_DATA_TF:
        if _serve(self, memoryview(pdu)[_PDU_HEADER.size :]):
            return
        _bound_unserved(self, pdu)
    else:
        discard(self)  # a release or an abort: a half message is dropped
    try:
        decoded, event = self._decode_pdu(pdu)
        self.event_queue.put(event)
    except Exception as exc:  # noqa: BLE001 - as pynetdicom: any failure is Evt19
        _DUL_LOG.error("Unable to decode the received PDU data")
        _DUL_LOG.exception(exc)
        self.event_queue.put("Evt19")
        return
    self._recv_pdu.put(decoded)


def _read_ahead(raw: Any, inbox: bytearray, wanted: int) -> bool:
    """Read until ``inbox`` holds ``wanted`` bytes; False if the peer closed first."""
    if raw is None:
        return False
    while len(inbox) < wanted:
        chunk = raw.recv(_READ_AHEAD)
        tcp.quick_ack(raw)
        if not chunk:
            return False
        inbox += chunk
    return True


def _take(raw: Any, inbox: bytearray, size: int) -> bytearray:
    """The next ``size`` bytes, from the inbox and then the socket.

    Fewer only if the peer closed; the inbox is then empty. A buffer is made for the
    whole PDU only up to ``_PREALLOCATE`` bytes: a PDU header may claim 4 GiB, and only
    bytes that have arrived may cost memory.
    """
    if len(inbox) >= size:
        pdu = inbox[:size]
        del inbox[:size]
        return pdu
    if size > _PREALLOCATE:
        pdu = inbox[:]
        inbox.clear()
        while raw is not None and len(pdu) < size:
            chunk = raw.recv(min(size - len(pdu), _PREALLOCATE))
            tcp.quick_ack(raw)
            if not chunk:
                break
            pdu += chunk
        return pdu
    pdu = bytearray(size)
    received = len(inbox)
    pdu[:received] = inbox
    inbox.clear()
    if raw is not None:
        with memoryview(pdu) as view:
            while received < size:
                count = raw.recv_into(view[received:])
                tcp.quick_ack(raw)
                if not count:
                    break
                received += count
    del pdu[received:]
    return pdu


def _bound_unserved(self: DULServiceProvider, pdu: bytearray) -> None:
    """Abort once pynetdicom's path has gathered more than one dataset may hold.

    That path (a command set in pieces, say) gathers a message in a ``BytesIO`` until its
    last fragment; it is counted here from PDU to PDU until a PDV flagged last arrives.
    """
    serving: _Serving | None = getattr(self.assoc.ae, _HANDLER, None)
    if serving is None or not self.assoc.is_established:
        return
    unserved = getattr(self, _UNSERVED, 0) + len(pdu)
    items = _items(memoryview(pdu)[_PDU_HEADER.size :])
    if items and any(flag & 0x02 for _context, flag, _start, _end in items):
        unserved = 0
    setattr(self, _UNSERVED, unserved)
    if unserved > serving.budget.max_dataset_bytes:
        raise ProtocolError("a message left to pynetdicom passed node.max_dataset_bytes")


def _closed_early(self: DULServiceProvider, exc: BaseException) -> None:
    _DUL_LOG.error("Connection closed before the entire PDU was received")
    _DUL_LOG.exception(exc)
    self.event_queue.put("Evt17")


def _serve(self: DULServiceProvider, view: memoryview) -> bool:
    """Serve a P-DATA-TF's part of a C-STORE request; False: pynetdicom's, untouched."""
    message: _Message | None = getattr(self, _MESSAGE, None)
    items = _items(view)
    if message is None:
        if items is None or not items or items[0][1] != _COMMAND_WHOLE:
            return False
        message = _start(self, view, items[0])
        if message is None or not _fragments_of(items, 1, message.context_id):
            return False
        first = 1
    elif items is None or not _fragments_of(items, 0, message.context_id):
        raise ProtocolError("a C-STORE request's P-DATA broke the fragment rules")
    elif self.state_machine.current_state != "Sta6":
        raise ProtocolError("a C-STORE request's P-DATA arrived outside data transfer")
    else:
        first = 0
    for _context_id, _flag, start, end in items[first:]:
        message.keep(view[start:end])
    if len(items) == first or items[-1][1] != _DATASET_LAST:
        setattr(self, _MESSAGE, message)
        return True
    setattr(self, _MESSAGE, None)
    _answer(self, message)
    return True


def _items(view: memoryview) -> list[tuple[int, int, int, int]] | None:
    """(context ID, control header, start, end) of each PDV's fragment; None if malformed."""
    items = []
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < _ITEM.size:
            return None
        length, context_id, flag = _ITEM.unpack_from(view, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end:
            return None
        items.append((context_id, flag, offset + _ITEM.size, stop))
        offset = stop
    return items


def _fragments_of(items: list[tuple[int, int, int, int]], first: int, context_id: int) -> bool:
    """Whether ``items[first:]`` are dataset fragments on ``context_id``, the last maybe last."""
    last = len(items) - 1
    for position in range(first, len(items)):
        item_context, flag, _start, _end = items[position]
        if item_context != context_id:
            return False
        if flag != _DATASET_MORE and not (flag == _DATASET_LAST and position == last):
            return False
    return True


def _start(
    self: DULServiceProvider, view: memoryview, item: tuple[int, int, int, int]
) -> _Message | None:
    """The C-STORE request this command set begins, if it is one to serve here."""
    assoc = self.assoc
    if (
        not assoc.is_established
        or self.state_machine.current_state != "Sta6"
        or _config.STORE_RECV_CHUNKED_DATASET
    ):
        return None
    serving: _Serving | None = getattr(assoc.ae, _HANDLER, None)
    served = getattr(self, _SERVED, None)
    if served is None:
        # Asked once, when the association is established: the node binds its
        # handlers when it starts the server, never on an association under way.
        served = (
            serving is not None
            and assoc.is_acceptor
            and not any(assoc.get_handlers(event) for event in _SKIPPED_EVENTS)
        )
        setattr(self, _SERVED, served)
    if not served or serving is None:
        return None
    dimse = assoc.dimse
    if dimse.message is not None or getattr(dimse, pdata.INCOMING, None) is not None:
        return None  # pynetdicom is half way through a message
    context_id, _flag, start, end = item
    context = assoc._accepted_cx.get(context_id)
    if context is None or context.abstract_syntax == _VERIFICATION:
        return None
    request = commandset.store_request_fields(view[start:end].tobytes())
    if request is None:
        return None
    return _Message(context_id, request, str(context.transfer_syntax[0]), serving.budget)


def _answer(self: DULServiceProvider, message: _Message) -> None:
    """Store the request's dataset and send the response, as pynetdicom's SCP would."""
    assoc = self.assoc
    serving: _Serving = getattr(assoc.ae, _HANDLER)
    request = message.request
    if message.refused is not None:
        status, comment = serving.refuse(
            assoc, request.sop_class_uid, request.sop_instance_uid, message.refused
        )
    else:
        chunks = message.chunks
        dataset = chunks[0] if len(chunks) == 1 else memoryview(b"".join(chunks))
        try:
            status, comment = serving.store(
                assoc,
                request.sop_class_uid,
                request.sop_instance_uid,
                message.transfer_syntax,
                dataset,
            )
        finally:
            del dataset
            message.release()
    if not assoc.is_established:
        return  # aborted meanwhile: pynetdicom sends nothing then either
    if comment is not None:
        comment = comment.encode("ascii", "replace").decode("ascii")
    command = commandset.store_response(
        request.message_id,
        request.sop_class_uid.encode("ascii"),
        request.sop_instance_uid.encode("ascii"),
        status,
        comment,
    )
    maximum = assoc.dimse.maximum_pdu_size
    for block in pdata.encode_pdus(pdata.fragments(command, None, message.context_id, maximum)):
        pdata.send_encoded(self, block)
