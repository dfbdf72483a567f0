"""Cheaper P-DATA sending for pynetdicom 3.0.4: one hand-off per block, not per PDU.

pynetdicom's ``DIMSEServiceProvider.send_msg`` cuts a message into P-DATA primitives of
the peer's maximum PDU size and queues each one; the DUL thread then takes them one per
loop, runs the state machine (DT-1), builds a ``P_DATA_TF`` object, encodes it, sends it
and fires two events. DCMTK storescp offers 16 KiB PDUs, so a 526 KB CT slice is ~33
such round trips between two threads; the forward benchmark measured ~30 % of the
node's Python time there.

Here the same fragments (pynetdicom's own ``encode_msg`` still cuts them, so PDU sizes
and PDV flags are what they were) are encoded straight to bytes, P-DATA-TF header by
PS3.8 9.3.5, and joined into blocks of up to ``BLOCK_BYTES``; each block crosses to the
DUL thread as one ``EncodedPData`` and is sent with one ``sendall``. The DT-1 and AR-7
actions (the only ones that send a P-DATA) send such a block as it is and anything else
as before. Lost on the way: ``EVT_PDU_SENT`` and ``EVT_DATA_SENT`` for these PDUs, which
the node does not bind (pynetdicom's own debug handlers for them are switched off with
``LOG_HANDLER_LEVEL``).

Receiving (PDUs are read by ``direct``): a C-STORE response that arrives whole in one
PDV (as every one does), and a C-STORE request whose command set does, are decoded by
``commandset`` and queued without pynetdicom's ``Dataset``.

Installed together with ``reactor`` and under the same version guard; pynetdicom's
private names are looked up only once installed, so importing this module is safe with
any version.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pynetdicom import _config, dimse, evt, fsm
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicomnode.dicom.adapt import commandset

BLOCK_BYTES = 1 << 20  # P-DATA-TF bytes per hand-off; a message is queued whole anyway
_PDU_HEADER = struct.Struct(">BBLLB")  # PDU type, reserved, PDU length; PDV length, context
_P_DATA_TF = 0x04
_DUL_LOG = logging.getLogger("pynetdicom.dul")
INCOMING = "_dicomnode_incoming_store"  # on a DIMSEServiceProvider: an _IncomingStore
_installed = False
_stock_receive: Any = None  # pynetdicom's receive_primitive, once replaced (for the tests)


class EncodedPData(P_DATA):
    """One or more whole P-DATA-TF PDUs, already encoded, to be sent as they are."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


def install() -> None:
    """Patch sending and receiving (idempotent); the caller checks the version."""
    global _installed
    if _installed:
        return
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]  # see module doc
    stock_receive = DIMSEServiceProvider.receive_primitive
    global _stock_receive
    _stock_receive = stock_receive

    def receive_primitive(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
        if _received_store_request(self, primitive):
            return
        if not _received_store_response(self, primitive):
            stock_receive(self, primitive)

    DIMSEServiceProvider.receive_primitive = receive_primitive  # type: ignore[method-assign]
    for name, send in (("DT-1", _dt_1), ("AR-7", _ar_7)):
        description, _stock, next_state = fsm.ACTIONS[name]
        fsm.ACTIONS[name] = (description, send, next_state)
    _installed = True


def encode_pdus(fragments: Iterable[tuple[int, bytes]]) -> Iterator[bytes]:
    """P-DATA-TF PDUs, one per (context ID, PDV) fragment, joined into blocks.

    A PDV is its message control header byte then the fragment (PS3.8 E.2); the PDV item
    length counts the context ID too, and the PDU length the item's own 4-byte length.
    """
    parts: list[bytes] = []
    size = 0
    for context_id, pdv in fragments:
        parts.append(_PDU_HEADER.pack(_P_DATA_TF, 0, len(pdv) + 5, len(pdv) + 1, context_id))
        parts.append(pdv)
        size += len(pdv) + 11
        if size >= BLOCK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def pdvs(primitives: Iterable[P_DATA]) -> Iterator[tuple[int, bytes]]:
    """The (context ID, PDV) fragments of pynetdicom's P-DATA primitives."""
    for primitive in primitives:
        yield from primitive.presentation_data_value_list


def fragments(
    command: bytes, primitive: Any, context_id: int, max_pdu: int
) -> Iterator[tuple[int, bytes]]:
    """A message's PDVs cut as pynetdicom 3.0.4's ``encode_msg`` cuts them.

    The command set first (control header 0x01, 0x03 on the last fragment), then the
    dataset if ``primitive`` has one (0x00, 0x02 on the last), from memory or streamed
    from the file it was stored in; each fragment fits a PDU of ``max_pdu`` (0: no limit).
    """
    yield from _cut(command, context_id, max_pdu, b"\x01", b"\x03")
    if primitive is None:
        return
    dataset = primitive.DataSet
    if dataset is not None:
        yield from _cut(dataset.getvalue(), context_id, max_pdu, b"\x00", b"\x02")
        return
    path, offset = primitive._dataset_path
    with Path(path).open("rb") as file:
        length = file.seek(0, 2) - file.seek(offset)
        size = max_pdu - 6 if max_pdu else max(length, 1)
        count = max(1, -(-length // size))
        for _ in range(count - 1):
            yield context_id, b"\x00" + file.read(size)
        yield context_id, b"\x02" + file.read(size)


def _cut(
    data: bytes, context_id: int, max_pdu: int, more: bytes, last: bytes
) -> Iterator[tuple[int, bytes]]:
    if not data:
        return
    size = max_pdu - 6 if max_pdu else len(data)
    end = len(data)
    for start in range(0, end, size):
        flag = last if start + size >= end else more
        yield context_id, flag + data[start : start + size]


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """pynetdicom 3.0.4's ``send_msg``, queuing encoded blocks instead of primitives.

    C-STORE command sets are encoded by ``commandset`` unless someone listens for
    ``EVT_DIMSE_SENT``, which wants pynetdicom's message object.
    """
    encoded = commandset.encode(primitive)
    if encoded is not None and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        command, has_dataset = encoded
        message_pdvs = fragments(
            command, primitive if has_dataset else None, context_id, self.maximum_pdu_size
        )
    else:
        if primitive.MessageIDBeingRespondedTo is None:
            dimse_msg = dimse._RQ_TO_MESSAGE[primitive.__class__]()
        else:
            dimse_msg = dimse._RSP_TO_MESSAGE[primitive.__class__]()
        dimse_msg.primitive_to_message(primitive)
        dimse_msg.context_id = context_id
        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": dimse_msg})
        message_pdvs = pdvs(dimse_msg.encode_msg(context_id, self.maximum_pdu_size))
    for block in encode_pdus(message_pdvs):
        self.dul.send_pdu(EncodedPData(block))


def _received_store_response(self: DIMSEServiceProvider, primitive: P_DATA) -> bool:
    """Queue a C-STORE response that came whole in one PDV; False: leave it to pynetdicom.

    pynetdicom decodes every command set into a pydicom ``Dataset`` first; an SCU gets one
    response per instance it sends, always in one small PDV.
    """
    if self.message is not None or primitive.__class__ is not P_DATA:
        return False
    if getattr(self, INCOMING, None) is not None:
        return False
    pdvs = primitive.presentation_data_value_list
    if len(pdvs) != 1 or pdvs[0][1][:1] != b"\x03":  # one PDV: a whole command set
        return False
    if self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
        return False  # someone wants pynetdicom's message object
    context_id, pdv = pdvs[0]
    response = commandset.decode_store_response(pdv[1:])
    if response is None:
        return False
    response._context_id = context_id
    self.msg_queue.put((context_id, response))
    return True


@dataclass(slots=True)
class _IncomingStore:
    """A C-STORE request whose command set is decoded and whose dataset is arriving."""

    request: C_STORE
    context_id: int
    command: bytes
    dataset: BytesIO


def _received_store_request(self: DIMSEServiceProvider, primitive: P_DATA) -> bool:
    """Take a C-STORE request's P-DATA; False: leave it to pynetdicom.

    pynetdicom decodes each request's command set into a pydicom ``Dataset`` and then
    into the primitive; ``commandset.decode_store_request`` makes the same primitive from
    the bytes. The dataset's fragments are gathered as pynetdicom gathers them, into a
    ``BytesIO``. Taken only when the command set arrives whole as the first PDV of a
    P-DATA and the PDVs after it are dataset fragments, the last one flagged last;
    anything else, also half way through a message, goes back to pynetdicom's own
    ``DIMSEMessage`` with what has arrived so far.
    """
    incoming = cast(_IncomingStore | None, getattr(self, INCOMING, None))
    if primitive.__class__ is not P_DATA:
        if incoming is not None:
            _hand_over(self, incoming)
        return False
    pdvs = primitive.presentation_data_value_list
    if incoming is None:
        if self.message is not None or not pdvs or pdvs[0][1][:1] != b"\x03":
            return False
        if self.assoc.get_handlers(evt.EVT_DIMSE_RECV) or _config.STORE_RECV_CHUNKED_DATASET:
            return False  # someone wants pynetdicom's message object, or a file
        context_id, pdv = pdvs[0]
        command = bytes(pdv[1:])
        request = commandset.decode_store_request(command)
        if request is None or not _dataset_fragments(pdvs, 1):
            return False
        incoming = _IncomingStore(request, context_id, command, BytesIO())
        first = 1
    elif not _dataset_fragments(pdvs, 0):
        _hand_over(self, incoming)
        return False
    else:
        first = 0
    write = incoming.dataset.write
    for _context_id, pdv in pdvs[first:]:
        with memoryview(pdv) as view:
            write(view[1:])
    if not pdvs or pdvs[-1][1][0] != 0x02 or len(pdvs) == first:
        setattr(self, INCOMING, incoming)
        return True
    setattr(self, INCOMING, None)
    request = incoming.request
    request.DataSet = incoming.dataset
    request._context_id = incoming.context_id
    self.msg_queue.put((incoming.context_id, request))
    return True


def _dataset_fragments(pdvs: list[tuple[int, bytes]], first: int) -> bool:
    """Whether ``pdvs[first:]`` are dataset fragments (0x00), the last maybe last (0x02)."""
    last = len(pdvs) - 1
    for position in range(first, len(pdvs)):
        flag = pdvs[position][1][:1]
        if flag != b"\x00" and not (flag == b"\x02" and position == last):
            return False
    return True


def _hand_over(self: DIMSEServiceProvider, incoming: _IncomingStore) -> None:
    """Make pynetdicom's ``DIMSEMessage`` of a request half received, as its own would be."""
    setattr(self, INCOMING, None)
    message = DIMSEMessage()
    message.encoded_command_set.write(incoming.command)
    message.context_id = incoming.context_id
    message.command_set = decode(message.encoded_command_set, True, True)
    message.__class__ = C_STORE_RQ
    message.data_set = incoming.dataset
    self.message = message


def _send_pdata(dul: DULServiceProvider) -> None:
    primitive = cast(P_DATA, dul.to_provider_queue.get(False))
    if not isinstance(primitive, EncodedPData):
        dul._send(P_DATA_TF(primitive))
        return
    send_encoded(dul, primitive.encoded)


def send_encoded(dul: DULServiceProvider, encoded: bytes) -> None:
    """Send encoded P-DATA-TF PDUs on the DUL's thread, as DT-1 would (``direct`` too)."""
    socket = dul.socket
    raw = getattr(socket, "socket", None)
    if socket is None or raw is None:
        _DUL_LOG.warning("Attempted to send data over closed connection")
        return
    try:
        raw.sendall(encoded)
    except Exception:  # noqa: BLE001 - as AssociationSocket.send: any failure is Evt17
        socket.event_queue.put("Evt17")  # Transport connection closed


def _dt_1(dul: DULServiceProvider) -> str:
    """DT-1 (Sta6 + Evt9): send P-DATA-TF."""
    _send_pdata(dul)
    return "Sta6"


def _ar_7(dul: DULServiceProvider) -> str:
    """AR-7 (Sta8 + Evt9): send P-DATA-TF while a release is pending."""
    _send_pdata(dul)
    return "Sta8"
