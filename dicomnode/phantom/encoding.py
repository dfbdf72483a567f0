"""Fast Part 10 encoding of many instances that differ in only a few elements.

pydicom spends ~50 us encoding each element, which is most of the cost of writing thousands
of small instances. The elements a series shares are encoded once here; each instance then
encodes only its file meta and its own few elements, and the bytes are merged in tag order
(PS3.5 7.1), giving exactly what ``pydicom.dcmwrite(..., enforce_file_format=True)`` gives.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

from pydicom.charset import default_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian

_PREAMBLE: Final = b"\x00" * 128 + b"DICM"


def _buffer() -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    return buffer


class SeriesEncoder:
    """Encodes instances as ``shared`` plus their own elements, in Explicit VR Little Endian."""

    __slots__ = ("_bytes", "_charset", "_tags")

    def __init__(self, shared: Dataset) -> None:
        self._charset: str | list[str] = shared.get("SpecificCharacterSet", default_encoding)
        tags = sorted(shared.keys())
        encoded: list[bytes] = []
        for tag in tags:
            buffer = _buffer()
            write_data_element(buffer, shared[tag], self._charset)
            encoded.append(buffer.getvalue())
        self._tags: list[BaseTag] = tags
        self._bytes = encoded

    def encode(self, file_meta: FileMetaDataset, own: Dataset) -> bytes:
        """One Part 10 file: preamble, file meta, then shared and own elements by tag."""
        if file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
            raise ValueError("the series encoder writes Explicit VR Little Endian only")
        buffer = _buffer()
        buffer.write(_PREAMBLE)
        write_file_meta_info(buffer, file_meta, enforce_standard=True)
        start = 0
        for tag in sorted(own.keys()):
            at = bisect_left(self._tags, tag)
            if at < len(self._tags) and self._tags[at] == tag:
                raise ValueError(f"{tag} is both shared and the instance's own")
            buffer.write(b"".join(self._bytes[start:at]))
            write_data_element(buffer, own[tag], self._charset)
            start = at
        buffer.write(b"".join(self._bytes[start:]))
        return bytes(buffer.getvalue())
