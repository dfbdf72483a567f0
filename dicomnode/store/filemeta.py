"""The DICOM File Meta Information (PS3.10 7.1) put in front of each received dataset.

Encoded here rather than by pydicom's ``write_file_meta_info``: that costs about a
millisecond per call (dataset machinery and value validation), and it runs for every
instance between receipt and acknowledgement. Group 0002 is always Explicit VR Little
Endian and has eight fixed elements, so the encoding is short; a test checks it byte for
byte against pydicom's.
"""

from __future__ import annotations

import functools
import struct

from pydicom.uid import UID

import dicomnode

# Under pydicom's registered root (1.2.826.0.1.3680043.8.498), as pydicom's own is.
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.7.4.1")
IMPLEMENTATION_VERSION_NAME = f"DICOMNODE_{dicomnode.__version__}"[:16]

_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def file_meta_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and group 0002 for a dataset stored exactly as received."""
    before, after = _around_instance_uid(sop_class_uid, transfer_syntax_uid, source_ae)
    instance = _element(0x0003, "UI", sop_instance_uid.encode("ascii", "replace"), b"\x00")
    length = len(before) + len(instance) + len(after)
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, length)
    return b"".join((_PREAMBLE, group_length, before, instance, after))


@functools.lru_cache(maxsize=256)
def _around_instance_uid(
    sop_class_uid: str, transfer_syntax_uid: str, source_ae: str
) -> tuple[bytes, bytes]:
    """The elements before and after (0002,0003): the same for a whole series."""
    before = _VERSION + _element(0x0002, "UI", sop_class_uid.encode("ascii", "replace"), b"\x00")
    after = b"".join(
        (
            _element(0x0010, "UI", transfer_syntax_uid.encode("ascii", "replace"), b"\x00"),
            _element(0x0012, "UI", IMPLEMENTATION_CLASS_UID.encode(), b"\x00"),
            _element(0x0013, "SH", IMPLEMENTATION_VERSION_NAME.encode(), b" "),
            _element(0x0016, "AE", source_ae.strip().encode("ascii", "replace"), b" ")
            if source_ae.strip()
            else b"",
        )
    )
    return before, after


def _element(element: int, vr: str, value: bytes, pad: bytes) -> bytes:
    """One short-form explicit VR element (PS3.5 7.1.2), padded to an even length."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr.encode(), len(value)) + value
