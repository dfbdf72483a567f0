"""C-STORE command sets encoded with ``struct``, not through a pydicom ``Dataset``.

pynetdicom builds every command set as a pydicom ``Dataset`` (validating each value as it
is set) and encodes it twice (once to learn the group length). For the one C-STORE
response the node sends per received instance that was ~16 % of its Python time on
small instances; for each C-STORE request of a forward, the same again.

The C-STORE requests an SCP receives, and the responses an SCU receives, are decoded here
too, for the same reason (pydicom decoding the request's command set was most of the
receiving thread's ~17 %).

Only the common shapes are handled here: a request without the C-MOVE originator fields,
a response without an Offending Element, ASCII text. For anything else ``encode``,
``decode_store_request`` and ``decode_store_response`` return None and pynetdicom does the
work as before. The layout is PS3.7 9.3.1.1 / 9.3.1.2 (Tables 9.3-1 and 9.3-2) in
Implicit VR Little Endian (PS3.7 6.3.1), elements in tag order; the tests compare the
results with pynetdicom's own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE

_HEADER = struct.Struct("<HHL")  # group, element, value length
_US = struct.Struct("<HHLH")
_UL = struct.Struct("<HHLL")

_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATASET = 0x0101
_DATASET = 0x0001


def encode(primitive: Any) -> tuple[bytes, bool] | None:
    """(command set bytes, whether a dataset follows), or None where pynetdicom must do it."""
    if type(primitive) is not C_STORE:
        return None
    if primitive.MessageIDBeingRespondedTo is None:
        return _request(primitive)
    return _response(primitive)


def _request(primitive: C_STORE) -> tuple[bytes, bool] | None:
    if (
        primitive.MoveOriginatorApplicationEntityTitle is not None
        or primitive.MoveOriginatorMessageID is not None
        or primitive.MessageID is None
        or primitive.Priority is None
    ):
        return None
    sop_class = _uid(primitive.AffectedSOPClassUID)
    sop_instance = _uid(primitive.AffectedSOPInstanceUID)
    if sop_class is None or sop_instance is None:
        return None
    has_dataset = bool(primitive.DataSet) or bool(getattr(primitive, "_dataset_path", None))
    body = b"".join(
        (
            _text(0x0002, sop_class),
            _US.pack(0, 0x0100, 2, _C_STORE_RQ),
            _US.pack(0, 0x0110, 2, primitive.MessageID),
            _US.pack(0, 0x0700, 2, primitive.Priority),
            _US.pack(0, 0x0800, 2, _DATASET if has_dataset else _NO_DATASET),
            _text(0x1000, sop_instance),
        )
    )
    return _UL.pack(0, 0x0000, 4, len(body)) + body, has_dataset


def _response(primitive: C_STORE) -> tuple[bytes, bool] | None:
    message_id = primitive.MessageIDBeingRespondedTo
    if primitive.OffendingElement is not None or primitive.Status is None or message_id is None:
        return None
    sop_class = sop_instance = None
    if primitive.AffectedSOPClassUID is not None:
        sop_class = _uid(primitive.AffectedSOPClassUID)
        if sop_class is None:
            return None
    comment = None
    if primitive.ErrorComment is not None:
        comment = str(primitive.ErrorComment)
        if not comment.isascii():
            return None
    if primitive.AffectedSOPInstanceUID is not None:
        sop_instance = _uid(primitive.AffectedSOPInstanceUID)
        if sop_instance is None:
            return None
    command = store_response(message_id, sop_class, sop_instance, primitive.Status, comment)
    return command, False


def store_response(
    message_id: int,
    sop_class: bytes | None,
    sop_instance: bytes | None,
    status: int,
    comment: str | None = None,
) -> bytes:
    """A C-STORE response command set; ``comment`` (ASCII) is the Error Comment."""
    parts = []
    if sop_class is not None:
        parts.append(_text(0x0002, sop_class))
    parts.append(_US.pack(0, 0x0100, 2, _C_STORE_RSP))
    parts.append(_US.pack(0, 0x0120, 2, message_id))
    parts.append(_US.pack(0, 0x0800, 2, _NO_DATASET))
    parts.append(_US.pack(0, 0x0900, 2, status))
    if comment is not None:
        parts.append(_text(0x0902, comment.encode("ascii"), pad=b" "))
    if sop_instance is not None:
        parts.append(_text(0x1000, sop_instance))
    body = b"".join(parts)
    return _UL.pack(0, 0x0000, 4, len(body)) + body


def _uid(value: Any) -> bytes | None:
    text = str(value) if value is not None else ""
    return text.encode("ascii") if text and text.isascii() else None


def _text(element: int, value: bytes, pad: bytes = b"\0") -> bytes:
    if len(value) % 2:
        value += pad
    return _HEADER.pack(0, element, len(value)) + value


# The elements a C-STORE response may carry here, by element number (group 0000), with
# how to read them; anything else is left to pynetdicom.
_RESPONSE_ELEMENTS = {
    0x0000: "UL",
    0x0002: "UI",
    0x0100: "US",
    0x0120: "US",
    0x0800: "US",
    0x0900: "US",
    0x0902: "LO",
    0x1000: "UI",
}


# The elements a C-STORE request may carry here (PS3.7 Table 9.3-1 less the C-MOVE
# originator fields).
_REQUEST_ELEMENTS = {
    0x0000: "UL",
    0x0002: "UI",
    0x0100: "US",
    0x0110: "US",
    0x0700: "US",
    0x0800: "US",
    0x1000: "UI",
}


def decode_store_request(command: bytes) -> C_STORE | None:
    """The C-STORE request in an Implicit VR Little Endian command set, or None.

    The primitive is what pynetdicom 3.0.4's ``message_to_primitive`` makes of the same
    bytes: the same setters, so the same validation, with pydicom's ``UID`` values
    (trailing NULs and spaces stripped). A request without a dataset, a UID with several
    values or anything pynetdicom would reject is left to pynetdicom.
    """
    values = _store_request_values(command)
    if values is None:
        return None
    sop_class, sop_instance = values[0x0002], values[0x1000]
    request = C_STORE()
    try:
        request.AffectedSOPClassUID = UID(sop_class)
        request.MessageID = values[0x0110]
        request.Priority = values[0x0700]
        request.AffectedSOPInstanceUID = UID(sop_instance)
    except (TypeError, ValueError):
        return None  # pynetdicom refuses it in its own words
    return request


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """The fields of a C-STORE request that serving it needs (``direct``)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def store_request_fields(command: bytes) -> StoreRequest | None:
    """A C-STORE request's fields, only where both UIDs are plain: digits and dots, 1-64.

    pynetdicom accepts every such UID without a word (``set_uid``); anything else, and
    whatever ``decode_store_request`` declines, is left to pynetdicom.
    """
    values = _store_request_values(command)
    if values is None:
        return None
    sop_class, sop_instance = values[0x0002], values[0x1000]
    if not (_plain_uid(sop_class) and _plain_uid(sop_instance)):
        return None
    return StoreRequest(values[0x0110], sop_class, sop_instance)


_UID_CHARACTERS = frozenset("0123456789.")


def _plain_uid(uid: str) -> bool:
    return len(uid) <= 64 and _UID_CHARACTERS.issuperset(uid)


def _store_request_values(command: bytes) -> dict[int, Any] | None:
    values = _elements(command, _REQUEST_ELEMENTS)
    if values is None:
        return None
    if values.get(0x0100) != _C_STORE_RQ or values.get(0x0800) in (None, _NO_DATASET):
        return None
    if any(key not in values for key in (0x0002, 0x0110, 0x0700, 0x1000)):
        return None
    sop_class, sop_instance = values[0x0002], values[0x1000]
    if not sop_class or not sop_instance or "\\" in sop_class or "\\" in sop_instance:
        return None
    return values


def decode_store_response(command: bytes) -> C_STORE | None:
    """The C-STORE response in an Implicit VR Little Endian command set, or None."""
    values = _elements(command, _RESPONSE_ELEMENTS)
    if values is None:
        return None
    if values.get(0x0100) != _C_STORE_RSP or values.get(0x0800) != _NO_DATASET:
        return None
    if 0x0120 not in values or 0x0900 not in values:
        return None
    response = C_STORE()
    response.MessageIDBeingRespondedTo = values[0x0120]
    response.Status = values[0x0900]
    if values.get(0x0002):
        response.AffectedSOPClassUID = values[0x0002]
    if values.get(0x1000):
        response.AffectedSOPInstanceUID = values[0x1000]
    if 0x0902 in values:
        response.ErrorComment = values[0x0902]
    return response


def _elements(command: bytes, known: dict[int, str]) -> dict[int, Any] | None:
    """Group 0000 elements by element number; None for any element not in ``known``."""
    values: dict[int, Any] = {}
    offset, end = 0, len(command)
    while offset < end:
        if end - offset < _HEADER.size:
            return None
        group, element, length = _HEADER.unpack_from(command, offset)
        offset += _HEADER.size
        vr = known.get(element)
        if group != 0 or vr is None or end - offset < length:
            return None
        raw = command[offset : offset + length]
        offset += length
        if vr == "US":
            if length != 2:
                return None
            values[element] = int.from_bytes(raw, "little")
        elif vr == "UL":
            if length != 4:
                return None
        elif not raw.isascii():
            return None
        else:
            values[element] = raw.decode("ascii").rstrip("\0 ")
    return values
