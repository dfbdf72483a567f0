"""Walk a received dataset's whole structure before it is acknowledged.

An acknowledgement promises that the instance can be read. pydicom reads lazily and
forgives much; DCMTK reads strictly; a dataset with one broken element deep inside (a
length past the end, a VR code that is none, a sequence without its delimiter) was
acknowledged, stored and forwarded, and failed only when a reader reached it. This walks
every element, sequence item and pixel data fragment of the bytes as received and
refuses the first thing a reader would not get past, naming the tag and the problem.

It runs on the association's thread before every acknowledgement, so it is one ``struct``
loop over the bytes, making no pydicom object. It judges structure only (PS3.5 7.1 data
elements, 7.5 nesting of data sets, A.4 encapsulation, 6.2 the VR codes and the value
lengths of the binary VRs, which pydicom refuses to convert otherwise); values are left
to the header read and to the readers.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, NoReturn

from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.uid import UID

from dicomnode.errors import UnreadableDatasetError

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
# Deeper nesting than real data has (SR content trees reach ~10); readers recurse per level.
MAX_DEPTH = 64

# What the walk needs to know of a VR, as bits of one int: the low three bits are the
# value length's required multiple minus one (PS3.5 6.2: 2, 4 or 8 for the binary VRs).
_LONG = 0x10  # explicit VR with a 32-bit length (PS3.5 7.1.2, Table 7.1-1)
_SQ = 0x20  # items follow (PS3.5 7.5)
_UN = 0x40  # unknown: may hold an implicit VR little endian sequence (PS3.5 6.2.2)
_BULK = 0x80  # OB or OW: undefined length only as encapsulated Pixel Data (PS3.5 A.4)

# Every VR code of PS3.5 Table 6.2-1.
_VR_CODES: dict[str, int] = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN"), 0),
    **dict.fromkeys(("SH", "ST", "TM", "UI"), 0),
    **dict.fromkeys(("UC", "UR", "UT"), _LONG),
    "US": 1,
    "SS": 1,
    "UL": 3,
    "SL": 3,
    "FL": 3,
    "AT": 3,
    "FD": 7,
    "OB": _LONG | _BULK,
    "OW": _LONG | _BULK | 1,
    "OF": _LONG | 3,
    "OL": _LONG | 3,
    "OD": _LONG | 7,
    "OV": _LONG | 7,
    "SV": _LONG | 7,
    "UV": _LONG | 7,
    "SQ": _LONG | _SQ,
    "UN": _LONG | _UN,
}
_EXPLICIT_CODES = {vr.encode("ascii"): code for vr, code in _VR_CODES.items()}


def _dictionary_code(vr: str) -> int:
    """The code of a data dictionary VR ("US or SS", "OB or OW", ...) for implicit VR."""
    choices = [_VR_CODES.get(choice.strip(), 0) & ~_LONG for choice in vr.split(" or ")]
    if any(code & _SQ for code in choices):
        return _SQ
    if any(code & _BULK for code in choices):
        return _BULK | min(code & 7 for code in choices)
    return min(code & 7 for code in choices)


# Implicit VR: the VR is the data dictionary's (what pydicom and DCMTK read it as).
_IMPLICIT_CODES: dict[int, int] = {
    tag: _dictionary_code(entry[0]) for tag, entry in DicomDictionary.items()
}
# Curves (50xx) and overlays (60xx), the repeating groups that carry binary values.
_REPEATING_CODES: dict[int, int] = {
    int(mask.replace("x", "0"), 16): _dictionary_code(entry[0])
    for mask, entry in RepeatersDictionary.items()
    if mask[:2] in ("50", "60") and "x" not in mask[2:] and "x" in mask[2:4]
}


def _implicit_code(tag: int) -> int:
    """The code for an implicit VR element; private and unknown ones are UN."""
    code = _IMPLICIT_CODES.get(tag)
    if code is not None:
        return code
    group = tag >> 16
    if group & 1:
        return _UN
    if group & 0xFF01 in (0x5000, 0x6000):
        code = _REPEATING_CODES.get(tag & 0xFF00FFFF)
        if code is not None:
            return code
    return 3 if tag & 0xFFFF == 0 else _UN  # a group length is UL


class _Syntax(NamedTuple):
    explicit: bool
    element: struct.Struct  # explicit: group, element, VR, 16-bit length; implicit: 32-bit
    length: struct.Struct  # a 32-bit length
    item: struct.Struct  # group, element, 32-bit length: items and delimiters
    item_bytes: bytes  # an item tag as encoded
    encapsulated: bool  # pixel data may be encapsulated


def _syntax(explicit: bool, little: bool, encapsulated: bool) -> _Syntax:
    order = "<" if little else ">"
    return _Syntax(
        explicit,
        struct.Struct(order + ("HH2sH" if explicit else "HHL")),
        struct.Struct(order + "L"),
        struct.Struct(order + "HHL"),
        struct.pack(order + "HH", 0xFFFE, 0xE000),
        encapsulated,
    )


_IMPLICIT_LE = _syntax(False, True, False)
_SYNTAXES: dict[str, _Syntax] = {}


def syntax_of(transfer_syntax_uid: str) -> _Syntax:
    """How a dataset in this transfer syntax is encoded (deflated: once inflated)."""
    syntax = _SYNTAXES.get(transfer_syntax_uid)
    if syntax is None:
        uid = UID(transfer_syntax_uid)
        if uid.is_transfer_syntax:
            syntax = _syntax(not uid.is_implicit_VR, uid.is_little_endian, uid.is_encapsulated)
        else:
            # A private syntax the sender proposed and we accepted: PS3.5 10.1 says
            # nothing of it, so read it as most are, explicit VR little endian.
            syntax = _syntax(True, True, True)
        _SYNTAXES[transfer_syntax_uid] = syntax
    return syntax


def walk(data: bytes | bytearray | memoryview, transfer_syntax_uid: str) -> None:
    """Raise UnreadableDatasetError unless ``data`` is a well-formed dataset in the syntax.

    ``data`` is the dataset as sent (for Deflated Explicit VR Little Endian: inflated,
    and ``transfer_syntax_uid`` that of Explicit VR Little Endian).
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    end = len(view)
    position = _dataset(view, 0, end, syntax_of(transfer_syntax_uid), 0, 0, 0)
    if position != end:  # only an item delimiter stops a dataset early
        _fail(_ITEM_DELIMITER, "item delimiter outside an item")


def _fail(tag: int, problem: str) -> NoReturn:
    raise UnreadableDatasetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {problem}")


def _vr_text(vr: bytes) -> str:
    return repr(vr.decode("ascii")) if vr.isalpha() else "0x" + vr.hex()


def _dataset(
    view: bytes | memoryview,
    position: int,
    end: int,
    syntax: _Syntax,
    depth: int,
    owner: int,
    delimited: int,
) -> int:
    """Walk the elements from ``position`` to ``end``; returns where the dataset ends.

    ``delimited``: inside an undefined-length item (of sequence ``owner``), which ends
    at its item delimiter; otherwise the dataset fills the bytes to ``end``.
    """
    explicit = syntax.explicit
    unpack = syntax.element.unpack_from
    unpack_length = syntax.length.unpack_from
    codes = _EXPLICIT_CODES
    last = -1
    while position < end:
        if end - position < 8:
            _fail(last if last >= 0 else owner, "is followed by a truncated element")
        if explicit:
            group, number, vr, length = unpack(view, position)
            tag = group << 16 | number
            if group == 0xFFFE:
                (length,) = unpack_length(view, position + 4)
                return _item_end(tag, length, position, owner, delimited)
            code = codes.get(vr)
            if code is None:
                _fail(tag, f"VR {_vr_text(vr)} is not a DICOM VR")
            position += 8
            if code & _LONG:
                if end - position < 4:
                    _fail(tag, "truncated element header")
                (length,) = unpack_length(view, position)
                position += 4
        else:
            group, number, length = unpack(view, position)
            tag = group << 16 | number
            if group == 0xFFFE:
                return _item_end(tag, length, position, owner, delimited)
            code = _implicit_code(tag)
            position += 8
        if tag <= last:
            _fail(tag, f"follows ({last >> 16:04X},{last & 0xFFFF:04X}): not ascending")
        if group < 8 and group != 4:
            # PS3.5 7.1: command (0000) and file meta (0002) groups never belong to a data
            # set, and groups 0001, 0003, 0005, 0007 are illegal; readers misparse either.
            _fail(tag, "group not allowed in a data set")
        last = tag
        if length == _UNDEFINED:
            if code & _SQ:
                position = _sequence(view, position, end, syntax, depth, tag, 0)
            elif code & _UN:
                position = _sequence(view, position, end, _IMPLICIT_LE, depth, tag, 0)
            elif code & _BULK and tag == _PIXEL_DATA and syntax.encapsulated:
                position = _fragments(view, position, end, syntax, tag)
            else:
                _fail(tag, "undefined length where it is not allowed")
            continue
        if length > end - position:
            _fail(tag, f"length {length} passes the end of its container")
        value_end = position + length
        if code & 7 and length & (code & 7):
            _fail(tag, f"length {length} is not a multiple of {(code & 7) + 1}")
        if code & _SQ:
            _sequence(view, position, value_end, syntax, depth, tag, value_end)
        elif code & _UN and length >= 8:
            inner = _IMPLICIT_LE
            if explicit and not group & 1:
                # pydicom reads a public UN as its dictionary VR (replace_un_with_known_vr).
                known = _IMPLICIT_CODES.get(tag, _UN)
                if known & 7 and length & (known & 7):
                    _fail(tag, f"length {length} is not a multiple of {(known & 7) + 1}")
                if known & _SQ:
                    _sequence(view, position, value_end, inner, depth, tag, value_end)
                    position = value_end
                    continue
            if view[position : position + 4] == inner.item_bytes:
                # Items: readers parse it as a sequence (PS3.5 6.2.2), so it must be one.
                _sequence(view, position, value_end, inner, depth, tag, value_end)
        position = value_end
    if delimited:
        _fail(owner, "item lacks its item delimiter")
    return position


def _item_end(tag: int, length: int, position: int, owner: int, delimited: int) -> int:
    """Where an undefined-length item ends, at its delimiter; raises for any other
    item or delimiter tag met where an element belongs."""
    if not delimited:
        _fail(tag, "delimiter or item where an element belongs")
    if tag != _ITEM_DELIMITER:
        _fail(owner, "item lacks its item delimiter")
    if length:
        _fail(owner, "item delimiter with a non-zero length")
    return position + 8


def _sequence(
    view: bytes | memoryview,
    position: int,
    end: int,
    syntax: _Syntax,
    depth: int,
    tag: int,
    defined_end: int,
) -> int:
    """Walk sequence ``tag``'s items; returns the position after it.

    ``defined_end``: where a defined-length sequence ends (its items fill it exactly);
    0 for an undefined length, ended by a sequence delimiter before ``end``.
    """
    if depth >= MAX_DEPTH:
        _fail(tag, f"sequences nested deeper than {MAX_DEPTH}")
    unpack = syntax.item.unpack_from
    while True:
        if position == defined_end:
            return position
        if end - position < 8:
            _fail(tag, "sequence lacks its delimiter" if not defined_end else "truncated item")
        group, number, length = unpack(view, position)
        item = group << 16 | number
        position += 8
        if item == _SEQUENCE_DELIMITER and not defined_end:
            if length:
                _fail(tag, "sequence delimiter with a non-zero length")
            return position
        if item != _ITEM:
            _fail(tag, f"holds ({group:04X},{number:04X}) where an item belongs")
        if length == _UNDEFINED:
            position = _dataset(view, position, end, syntax, depth + 1, tag, 1)
            continue
        if length > end - position:
            _fail(tag, f"item length {length} passes the sequence's end")
        _dataset(view, position, position + length, syntax, depth + 1, tag, 0)
        position += length


def _fragments(view: bytes | memoryview, position: int, end: int, syntax: _Syntax, tag: int) -> int:
    """Walk encapsulated pixel data: the offset table item, fragments, the delimiter."""
    unpack = syntax.item.unpack_from
    items = 0
    while True:
        if end - position < 8:
            _fail(tag, "fragments lack their sequence delimiter")
        group, number, length = unpack(view, position)
        item = group << 16 | number
        position += 8
        if item == _SEQUENCE_DELIMITER:
            if length:
                _fail(tag, "sequence delimiter with a non-zero length")
            if not items:
                _fail(tag, "lacks the basic offset table item")
            return position
        if item != _ITEM:
            _fail(tag, f"holds ({group:04X},{number:04X}) where a fragment belongs")
        if length > end - position:  # an undefined length too
            _fail(tag, f"fragment length {length} passes the end")
        position += length
        items += 1
