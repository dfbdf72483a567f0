"""Received C-STORE requests: decoded with ``struct``, equal to what pynetdicom makes.

Each case runs the same P-DATA primitives through pynetdicom 3.0.4's own
``DIMSEServiceProvider.receive_primitive`` and through the node's, and compares the
queued primitives field by field and the dataset byte for byte.
"""

from __future__ import annotations

import queue
import struct
from io import BytesIO
from typing import Any

import pytest
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from dicomnode.dicom import sockets
from dicomnode.dicom.adapt import commandset, pdata, reactor

# pynetdicom's own, whether or not another test installed the node's already.
_STOCK_RECEIVE = pdata._stock_receive or DIMSEServiceProvider.receive_primitive
_CT = "1.2.840.10008.5.1.4.1.1.2"
_FIELDS = (
    "MessageID",
    "MessageIDBeingRespondedTo",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
    "Status",
    "ErrorComment",
    "OffendingElement",
    "_context_id",
    "_dataset_path",
    "_dataset_file",
)


class _Association:
    """What ``DIMSEServiceProvider`` asks of its association while receiving."""

    def __init__(self, *handlers: Any) -> None:
        self._handlers = list(handlers)
        self.dul = self
        self.event_queue: queue.Queue[str] = queue.Queue()  # Evt19 for an invalid message

    def get_handlers(self, event: Any) -> list[Any]:
        return self._handlers if event is evt.EVT_DIMSE_RECV else []


def _command(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(
        struct.pack("<HHL", 0, element, len(value)) + value for element, value in elements
    )
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _request_command(
    sop_class: bytes = _CT.encode() + b"\0",
    sop_instance: bytes = b"1.2.3.4",
    message_id: int = 7,
    priority: int = 2,
    dataset_type: int = 0x0001,
    extra: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    elements = [
        (0x0002, sop_class),
        (0x0100, _us(0x0001)),
        (0x0110, _us(message_id)),
        (0x0700, _us(priority)),
        (0x0800, _us(dataset_type)),
        (0x1000, sop_instance),
        *extra,
    ]
    return _command(*sorted(elements))


def _pdata(*pdvs: tuple[int, bytes]) -> P_DATA:
    primitive = P_DATA()
    for context_id, pdv in pdvs:  # as the DUL makes them from a P-DATA-TF: [ID, PDV]
        primitive.presentation_data_value_list.append([context_id, pdv])  # type: ignore[arg-type]  # pynetdicom's own shape
    return primitive


def _receive(receive: Any, primitives: list[P_DATA], handlers: tuple[Any, ...] = ()) -> Any:
    provider = DIMSEServiceProvider(_Association(*handlers))  # type: ignore[arg-type]  # a stand-in
    for primitive in primitives:
        receive(provider, primitive)
    items = []
    while not provider.msg_queue.empty():
        items.append(provider.msg_queue.get())
    return provider, items


def _node_receive(provider: DIMSEServiceProvider, primitive: P_DATA) -> None:
    taken = pdata._received_store_request(provider, primitive)
    if not taken and not pdata._received_store_response(provider, primitive):
        _STOCK_RECEIVE(provider, primitive)


def _assert_same(stock_items: list[Any], our_items: list[Any]) -> None:
    assert len(our_items) == len(stock_items)
    for (stock_id, stock), (our_id, ours) in zip(stock_items, our_items, strict=True):
        assert our_id == stock_id
        assert type(ours) is type(stock)
        for field in _FIELDS:
            assert getattr(ours, field) == getattr(stock, field), field
            assert type(getattr(ours, field)) is type(getattr(stock, field)), field
        assert ours.DataSet.getvalue() == stock.DataSet.getvalue()
        assert ours.is_valid_request == stock.is_valid_request


_DATA = bytes(range(256)) * 70  # 17,920 bytes


def _cut(command: bytes, data: bytes, shape: str) -> list[P_DATA]:
    """The request as a peer may send it, in P-DATA primitives."""
    half = len(data) // 2
    if shape == "one-pdata":
        return [
            _pdata((3, b"\x03" + command), (3, b"\x00" + data[:half]), (3, b"\x02" + data[half:]))
        ]
    if shape == "command-then-data":
        return [_pdata((3, b"\x03" + command)), _pdata((3, b"\x02" + data))]
    if shape == "many-pdata":
        pieces = [data[i : i + 4000] for i in range(0, len(data), 4000)]
        return [
            _pdata((3, b"\x03" + command)),
            *(_pdata((3, b"\x00" + piece)) for piece in pieces[:-1]),
            _pdata((3, b"\x02" + pieces[-1])),
        ]
    if shape == "command-in-two-pdvs":
        return [
            _pdata((3, b"\x01" + command[:10]), (3, b"\x03" + command[10:]), (3, b"\x02" + data))
        ]
    if shape == "command-in-two-pdata":
        return [
            _pdata((3, b"\x01" + command[:10])),
            _pdata((3, b"\x03" + command[10:]), (3, b"\x02" + data)),
        ]
    if shape == "last-fragment-early":  # pynetdicom stops at the first last fragment
        return [
            _pdata((3, b"\x03" + command)),
            _pdata((3, b"\x02" + data[:half]), (3, b"\x00" + data[half:])),
        ]
    if shape == "odd-control-byte":
        return [
            _pdata((3, b"\x03" + command)),
            _pdata((3, b"\x00" + data[:half]), (3, b"\x06" + data[half:])),
        ]
    if shape == "empty-dataset":
        return [_pdata((3, b"\x03" + command), (3, b"\x02"))]
    raise AssertionError(shape)


_SHAPES = (
    "one-pdata",
    "command-then-data",
    "many-pdata",
    "command-in-two-pdvs",
    "command-in-two-pdata",
    "last-fragment-early",
    "odd-control-byte",
    "empty-dataset",
)


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize(
    "command",
    [
        _request_command(),
        _request_command(sop_instance=b"1.2.3.45\0", message_id=0, priority=0),
        _request_command(sop_instance=b"1.2.3.45 ", message_id=65535, priority=1),
        _request_command(sop_instance=b"01.2.3"),  # not PS3.5 syntax, accepted
    ],
    ids=["plain", "padded-nul", "padded-space", "odd-values"],
)
def test_requests_are_received_as_pynetdicom_receives_them(command: bytes, shape: str) -> None:
    primitives = _cut(command, _DATA, shape)
    _, stock = _receive(_STOCK_RECEIVE, primitives)
    provider, ours = _receive(_node_receive, primitives)
    assert stock, "the case should produce a request"
    _assert_same(stock, ours)
    assert provider.message is None
    assert getattr(provider, pdata.INCOMING, None) is None


def test_the_common_shape_is_decoded_without_pynetdicom() -> None:
    command = _request_command()
    request = commandset.decode_store_request(command)
    assert request is not None
    assert (request.MessageID, request.Priority) == (7, 2)
    assert (request.AffectedSOPClassUID, request.AffectedSOPInstanceUID) == (_CT, "1.2.3.4")

    provider = DIMSEServiceProvider(_Association())  # type: ignore[arg-type]  # a stand-in
    assert pdata._received_store_request(provider, _pdata((3, b"\x03" + command)))
    assert provider.message is None  # not pynetdicom's message: ours
    assert pdata._received_store_request(provider, _pdata((3, b"\x02" + _DATA)))
    _context_id, queued = provider.msg_queue.get_nowait()
    assert queued.DataSet.getvalue() == _DATA


@pytest.mark.parametrize(
    "command",
    [
        _request_command(extra=((0x1030, b"MOVER "), (0x1031, _us(3)))),  # C-MOVE originator
        _request_command(dataset_type=0x0101),  # no dataset
        _request_command(sop_instance="1.2.3.ä".encode("latin-1") + b"\0"),  # not ASCII
        _request_command(sop_instance=b"1.2.3\\1.2.4 "),  # two values
        _request_command(sop_instance=b"1." + b"2" * 70),  # too long: pynetdicom refuses it
        _request_command(sop_class=b""),  # no SOP class: pynetdicom's to judge
        _request_command(priority=7),  # pynetdicom refuses it
        _command((0x0100, _us(0x0001)), (0x0110, _us(1))),  # elements missing
        _command((0x0100, _us(0x8001)), (0x0120, _us(1)), (0x0800, _us(0x0101))),  # a response
        _request_command()[:-3],  # truncated
    ],
    ids=[
        "move",
        "no-dataset",
        "not-ascii",
        "two-values",
        "too-long",
        "no-class",
        "priority",
        "missing",
        "rsp",
        "cut",
    ],
)
def test_unusual_requests_are_left_to_pynetdicom(command: bytes) -> None:
    assert commandset.decode_store_request(command) is None
    primitives = _cut(command, _DATA, "one-pdata")
    assert _outcome(_node_receive, primitives) == _outcome(_STOCK_RECEIVE, primitives)


def _outcome(receive: Any, primitives: list[P_DATA]) -> Any:
    try:
        provider, items = _receive(receive, primitives)
    except Exception as exc:  # noqa: BLE001 - comparing how pynetdicom fails
        return type(exc)
    dul = provider.assoc
    events = [dul.event_queue.get() for _ in range(dul.event_queue.qsize())]
    return [(context_id, type(p), getattr(p, "MessageID", None)) for context_id, p in items], events


def test_a_listener_for_received_messages_gets_pynetdicom_s_message() -> None:
    listener = (lambda event: None, None)
    provider = DIMSEServiceProvider(_Association(listener))  # type: ignore[arg-type]  # a stand-in
    first = _cut(_request_command(), _DATA, "one-pdata")[0]
    assert not pdata._received_store_request(provider, first)
    assert getattr(provider, pdata.INCOMING, None) is None


def test_the_node_s_receiving_is_installed_with_the_reactors() -> None:
    sockets.apply_library_settings()
    if not reactor.installed():
        pytest.skip("pynetdicom version without the adapted loops")
    assert DIMSEServiceProvider.receive_primitive is not _STOCK_RECEIVE
    primitives = _cut(_request_command(), _DATA, "command-then-data")
    _, stock = _receive(_STOCK_RECEIVE, primitives)
    _, ours = _receive(DIMSEServiceProvider.receive_primitive, primitives)
    _assert_same(stock, ours)


def test_a_dataset_is_a_bytes_buffer_as_before() -> None:
    primitives = _cut(_request_command(), _DATA, "many-pdata")
    _, ours = _receive(_node_receive, primitives)
    dataset = ours[0][1].DataSet
    assert isinstance(dataset, BytesIO)
    assert bytes(dataset.getbuffer()) == _DATA
