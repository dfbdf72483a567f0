"""Inflate a Deflated Explicit VR Little Endian dataset without trusting its size.

A deflate stream can inflate a thousandfold: one peer's 1 MiB dataset took the node from
160 MB to 2.2 GB when it was inflated in one call. Here the input is fed in small
pieces and each call may return only what is left under ``max_inflated_bytes``, so
memory never exceeds the limit by more than one piece; a dataset that would pass it is
refused (0xA700) as soon as it does. PS3.5 A.5: the dataset is deflated (RFC 1951)
without a zlib header, and the stream must end where the dataset does.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomnode.domain import ReceivedInstance
from dicomnode.errors import DatasetTooLargeError, UnreadableDatasetError

_INPUT_PIECE = 64 * 1024  # zlib copies the unread input on every call: keep it small
_OUTPUT_PIECE = 4 * 1024 * 1024


def inflate(data: bytes | memoryview, max_inflated_bytes: int) -> bytearray:
    """The inflated dataset. Raises DatasetTooLargeError or UnreadableDatasetError."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)
    out = bytearray()
    start = 0
    try:
        while start < len(view) and not inflater.eof:
            pending: bytes | memoryview = view[start : start + _INPUT_PIECE]
            start += _INPUT_PIECE
            while True:
                asked = min(max_inflated_bytes + 1 - len(out), _OUTPUT_PIECE)
                piece = inflater.decompress(pending, asked)
                out += piece
                if len(out) > max_inflated_bytes:
                    raise DatasetTooLargeError(
                        f"inflates past max_inflated_bytes ({max_inflated_bytes})"
                    )
                pending = inflater.unconsumed_tail
                # A full piece may leave output inside zlib even when no input is left.
                if inflater.eof or (not pending and len(piece) < asked):
                    break
    except zlib.error as exc:
        raise UnreadableDatasetError(f"deflated data is corrupt: {exc}"[:64]) from exc
    if not inflater.eof:
        raise UnreadableDatasetError("deflated data ends before its stream does")
    # A NUL after the stream pads it to an even length (DCMTK writes one).
    trailing = inflater.unused_data + bytes(view[start : start + 2])
    if trailing not in (b"", b"\0") or start + 2 < len(view):
        raise UnreadableDatasetError("bytes follow the end of the deflated stream")
    return out


def inflated(instance: ReceivedInstance, max_inflated_bytes: int) -> ReceivedInstance:
    """``instance`` as Explicit VR Little Endian if it was deflated, else itself."""
    if instance.transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        return instance
    data = inflate(instance.dataset, max_inflated_bytes)
    return replace(instance, transfer_syntax_uid=ExplicitVRLittleEndian, dataset=memoryview(data))
