"""Checking an A-ASSOCIATE-RQ PDU before pynetdicom reads it.

pynetdicom 3.0.4 trusts the request's structure: an even presentation context ID raises
``ValueError`` in its state machine (AE-6), killing the connection's DUL thread while
the association thread waits out the ACSE timeout on its slot; a context without an
abstract or transfer syntax sub-item does the same; duplicate IDs and a missing
application context are accepted. So the node walks the PDU first (PS3.8 9.3.2 and
its items, 9.3.2.1-9.3.2.3) and refuses what is not a request it can answer:

- items whose lengths do not add up: A-ABORT (the PDU cannot be read), as PS3.8 9.3.1
  lets a receiver do with an invalid PDU;
- everything else: A-ASSOCIATE-RJ, rejected-permanent, from the service user (PS3.8
  9.3.4), reason "application-context-name-not-supported" where that item is missing,
  else "no-reason-given".

Whatever passes is finally decoded as pynetdicom will decode it; a failure there is a
refusal too, never an exception in a reactor thread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_RQ

_ITEM = struct.Struct(">BBH")  # item type, reserved, item length
_FIXED = 74  # PDU header (6) + version, reserved, called, calling, reserved (PS3.8 9.3.2)
_APPLICATION_CONTEXT, _PRESENTATION_CONTEXT, _USER_INFORMATION = 0x10, 0x20, 0x50
_ABSTRACT_SYNTAX, _TRANSFER_SYNTAX = 0x30, 0x40
_UID_MAX = 64  # PS3.5 9.1

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason.
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
NO_REASON_GIVEN = 0x01
APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a request is refused, and how: an A-ABORT, or an A-ASSOCIATE-RJ with a reason."""

    detail: str
    abort: bool = False
    reject_reason: int = NO_REASON_GIVEN


def calling_ae_title(pdu: bytes | bytearray) -> str:
    """The calling AE title of a (possibly malformed) A-ASSOCIATE-RQ, for the log."""
    return bytes(pdu[26:42]).decode("ascii", "replace").strip(" \0")


def problem(pdu: bytes | bytearray) -> Problem | None:
    """What is wrong with this whole A-ASSOCIATE-RQ PDU (header included); None: nothing."""
    if len(pdu) < _FIXED:
        return Problem("shorter than the fixed fields", abort=True)
    items = _items(pdu, _FIXED, len(pdu))
    if items is None:
        return Problem("item lengths do not match the PDU length", abort=True)
    found = _check_items(pdu, items)
    if found is not None:
        return found
    try:
        decoded = A_ASSOCIATE_RQ()
        decoded.decode(bytes(pdu))
        decoded.to_primitive()
    except Exception as exc:  # noqa: BLE001 - whatever pynetdicom cannot read is refused
        return Problem(f"not decodable: {type(exc).__name__}", abort=True)
    return None


def _items(pdu: bytes | bytearray, start: int, end: int) -> list[tuple[int, int, int]] | None:
    """(type, value start, value end) of each item in ``pdu[start:end]``; None if they overrun."""
    items = []
    offset = start
    while offset < end:
        if end - offset < _ITEM.size:
            return None
        item_type, _, length = _ITEM.unpack_from(pdu, offset)
        value = offset + _ITEM.size
        if value + length > end:
            return None
        items.append((item_type, value, value + length))
        offset = value + length
    return items


def _check_items(pdu: bytes | bytearray, items: list[tuple[int, int, int]]) -> Problem | None:
    contexts = [item for item in items if item[0] == _PRESENTATION_CONTEXT]
    application = [item for item in items if item[0] == _APPLICATION_CONTEXT]
    if len(application) != 1 or not _is_uid(pdu, application[0]):
        return Problem(
            "no single application context name", reject_reason=APPLICATION_CONTEXT_NOT_SUPPORTED
        )
    if not contexts:
        return Problem("no presentation context")
    if sum(1 for item in items if item[0] == _USER_INFORMATION) > 1:
        return Problem("more than one user information item")
    for item_type, start, end in items:
        if item_type == _USER_INFORMATION and _items(pdu, start, end) is None:
            return Problem("user information sub-item lengths do not add up", abort=True)
    seen: set[int] = set()
    for _type, start, end in contexts:
        if end - start < 4:
            return Problem("presentation context shorter than its fixed fields", abort=True)
        context_id = pdu[start]
        if context_id % 2 == 0:  # PS3.8 9.3.2.2: odd integers between 1 and 255
            return Problem(f"even presentation context ID {context_id}")
        if context_id in seen:
            return Problem(f"presentation context ID {context_id} used twice")
        seen.add(context_id)
        sub_items = _items(pdu, start + 4, end)
        if sub_items is None:
            return Problem("presentation context sub-item lengths do not add up", abort=True)
        abstract = [sub for sub in sub_items if sub[0] == _ABSTRACT_SYNTAX]
        transfer = [sub for sub in sub_items if sub[0] == _TRANSFER_SYNTAX]
        if len(abstract) != 1 or not _is_uid(pdu, abstract[0]):
            return Problem(f"presentation context {context_id} without one abstract syntax")
        if not transfer or not all(_is_uid(pdu, sub) for sub in transfer):
            return Problem(f"presentation context {context_id} without a transfer syntax")
    return None


def _is_uid(pdu: bytes | bytearray, item: tuple[int, int, int]) -> bool:
    _type, start, end = item
    value = bytes(pdu[start:end]).strip(b"\0 ")
    return 0 < len(value) <= _UID_MAX and all(c == 0x2E or 0x30 <= c <= 0x39 for c in value)
