"""Read what the index needs from a received dataset, without touching its pixel data.

Also checks that the dataset is the one the command announced (PS3.4 B.2.3: a mismatch
is 0xA900) and that its identifying UIDs are usable. A UID that breaks PS3.5 9.1 syntax
but is otherwise usable (printable, at most 64 characters) is accepted with a warning:
real scanners send such UIDs, and refusing them would lose studies a PACS forwards.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset
from pydicom.filereader import ENCODED_VR, read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, IS, DSfloat, PersonName

from dicomnode.domain import ReceivedInstance
from dicomnode.errors import UIDMismatchError, UnreadableDatasetError

# Attributes kept in the index for every series: what rules and operators look at.
ROUTING_KEYWORDS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "BodyPartExamined",
    "ProtocolName",
    "StudyDescription",
    "SliceThickness",
    "ImageType",
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "InstitutionName",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ConvolutionKernel",
    "ContrastBolusAgent",
    "KVP",
    "SOPClassUID",
    "FrameOfReferenceUID",
    "NumberOfFrames",
    "Units",
    "Radiopharmaceutical",
    "SeriesDate",
    "StudyDate",
)
_ROUTING_TAGS = tuple(
    (keyword, int(cast(int, tag_for_keyword(keyword)))) for keyword in ROUTING_KEYWORDS
)
_UID_TAGS = {
    keyword: int(cast(int, tag_for_keyword(keyword)))
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
}
_SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
# Every element read_header looks at; pydicom adds (0008,0005) itself. The others are
# skipped with a seek, not kept: building and storing an element for each of a CT's
# ~150 elements was most of the parse. Undefined-length sequences are still parsed
# (pydicom must, to find their end), so what is refused as unreadable does not change.
_NEEDED_TAGS = sorted(
    Tag(tag) for tag in {tag for _keyword, tag in _ROUTING_TAGS} | set(_UID_TAGS.values())
)
_NEEDED_SET = frozenset(int(tag) for tag in _NEEDED_TAGS) | {0x00080005}
_DEFER_SIZE = 4096  # a needed value longer than this is not read (none should be)
_IMPLICIT_ELEMENT = struct.Struct("<HHL")  # group, element, length
_EXPLICIT_ELEMENT = struct.Struct("<HH2sH")  # group, element, VR, length
_LENGTH_32 = struct.Struct("<L")
_LONG_LENGTH_VRS = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# Little-endian, not deflated: the syntaxes _scan reads (True: implicit VR). Every
# compressed syntax is explicit VR little endian outside its pixel data.
_LITTLE_ENDIAN_SYNTAXES = {
    str(uid): uid.is_implicit_VR
    for uid in map(UID, AllTransferSyntaxes)
    if uid.is_little_endian and not uid.is_deflated
}
_PIXEL_DATA = BaseTag(0x7FE00010)
_UID_SYNTAX = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_USABLE = re.compile(r"[\x21-\x5b\x5d-\x7e]{1,64}")  # printable, no space or backslash

JSONValue = str | int | float | list[Any] | None

# Converted routing values by their raw bytes. The instances of a series repeat nearly
# all of them, and converting them with pydicom was 11-14 % of the node's Python time on
# ingest; a few thousand entries cover many series at once. Reads and writes of a dict
# are atomic, so association threads share it without a lock.
_CONVERTED: dict[tuple[Any, ...], JSONValue] = {}
_CONVERTED_MAX = 4096


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """The identifying and routing attributes of one received instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str | None
    attributes: dict[str, JSONValue]
    warnings: tuple[str, ...] = ()


def read_header(instance: ReceivedInstance) -> InstanceHeader:
    """Parse and check ``instance``'s dataset.

    Raises UnreadableDatasetError (0xC000 range) or UIDMismatchError (0xA900).
    """
    parsed = _decode(instance)
    warnings: list[str] = []
    sop_class = _uid(parsed, "SOPClassUID", warnings)
    sop_instance = _uid(parsed, "SOPInstanceUID", warnings)
    if sop_class != instance.sop_class_uid.strip():
        raise UIDMismatchError("SOP Class UID in the dataset differs from the C-STORE request")
    if sop_instance != instance.sop_instance_uid.strip():
        raise UIDMismatchError("SOP Instance UID in the dataset differs from the C-STORE request")
    study = _uid(parsed, "StudyInstanceUID", warnings)
    series = _uid(parsed, "SeriesInstanceUID", warnings)
    attributes = _routing_attributes(parsed)
    modality = attributes.get("Modality")
    return InstanceHeader(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=study,
        series_uid=series,
        modality=modality if isinstance(modality, str) and modality else None,
        attributes=attributes,
        warnings=tuple(warnings),
    )


def header_of(dataset: Dataset) -> InstanceHeader:
    """The header of a dataset the node made itself (a SEG or SR result)."""
    attributes = {kw: _json_value(dataset, kw) for kw in ROUTING_KEYWORDS if kw in dataset}
    modality = attributes.get("Modality")
    return InstanceHeader(
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_uid=str(dataset.StudyInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        modality=modality if isinstance(modality, str) and modality else None,
        attributes=attributes,
    )


class _Parsed:
    """A dataset's elements: scanned (``raw``, by tag as a plain int) or read by pydicom.

    The ``Dataset`` of scanned elements is made only when something asks for it: with
    the UIDs and most routing values read from ``raw``, most instances never need one
    (making it, and converting its character set, was ~10 % of the node's Python time).
    """

    __slots__ = ("_dataset", "_encoding", "_implicit", "raw")

    def __init__(
        self,
        raw: dict[int, RawDataElement] | None,
        implicit: bool,
        encoding: str | list[str],
        dataset: Dataset | None = None,
    ) -> None:
        self.raw = raw
        self._implicit = implicit
        self._encoding = encoding
        self._dataset = dataset

    def dataset(self) -> Dataset:
        if self._dataset is None:
            assert self.raw is not None  # one of the two is always given
            self._dataset = _dataset_of(self.raw, self._implicit, self._encoding)
        return self._dataset


def _decode(instance: ReceivedInstance) -> _Parsed:
    syntax_uid = instance.transfer_syntax_uid
    raw: bytes | memoryview = instance.dataset
    implicit = _LITTLE_ENDIAN_SYNTAXES.get(syntax_uid)
    if implicit is not None:
        try:
            elements = _scan(raw, implicit)
            if elements is not None:
                return _Parsed(elements, implicit, _encoding_of(elements.get(0x00080005)))
        except Exception as exc:
            raise UnreadableDatasetError(f"cannot parse the dataset: {type(exc).__name__}") from exc
    syntax = UID(syntax_uid)
    return _Parsed(None, syntax.is_implicit_VR, default_encoding, _read_with_pydicom(raw, syntax))


# The character sets' encodings by their raw (0008,0005) element: every instance of a
# series has the same, and pydicom's conversion of it was ~5 % of the node's time.
_ENCODINGS: dict[tuple[Any, ...], str | list[str]] = {}


def _encoding_of(charset: RawDataElement | None) -> str | list[str]:
    """What pydicom's ``read_dataset`` makes of (0008,0005); raises as it would."""
    if charset is None:
        return default_encoding
    key = (charset.VR, charset.value, charset.is_implicit_VR)
    encoding = _ENCODINGS.get(key)
    if encoding is None:
        encoding = convert_encodings(convert_raw_data_element(charset).value)
        if len(_ENCODINGS) >= _CONVERTED_MAX:
            _ENCODINGS.clear()
        _ENCODINGS[key] = encoding
    return encoding if isinstance(encoding, str) else list(encoding)


def _scan(raw: bytes | memoryview, implicit: bool) -> dict[int, RawDataElement] | None:
    """What ``_read_with_pydicom`` reads, for the common shape only; None: let pydicom read it.

    pydicom's ``data_element_generator`` makes a ``BaseTag`` and compares it with the
    stop tag for each of a dataset's elements, needed or not: on small instances that
    walk was about a fifth of the node's Python time. This walks the top level with
    ``struct`` and makes the same ``RawDataElement`` for the elements read, with the
    same offsets and values (``_dataset_of`` puts the same ``Dataset`` around them). It
    declines whatever pydicom would treat specially: an undefined length before the
    pixel data (a sequence pydicom must parse to find its end), a VR pydicom does not
    know, a dataset whose first element contradicts the transfer syntax's VR encoding,
    an item delimiter, a value running past the end. ``tests/store/test_header.py``
    compares the two on real, synthetic and damaged datasets.
    """
    end = len(raw)
    if end >= 6:
        looks_implicit = not (0x40 < raw[4] < 0x5B and 0x40 < raw[5] < 0x5B)
        if looks_implicit != implicit:
            return None
    elements: dict[int, RawDataElement] = {}
    needed = _NEEDED_SET
    offset = 0
    vr: str | None = None
    while end - offset >= 8:
        if implicit:
            group, number, length = _IMPLICIT_ELEMENT.unpack_from(raw, offset)
            value_at = offset + 8
        else:
            group, number, vr_bytes, length = _EXPLICIT_ELEMENT.unpack_from(raw, offset)
            if vr_bytes not in ENCODED_VR:
                return None
            value_at = offset + 8
            if vr_bytes in _LONG_LENGTH_VRS:
                if end - value_at < 4:
                    return None
                (length,) = _LENGTH_32.unpack_from(raw, value_at)
                value_at += 4
        tag = group << 16 | number
        if tag >= 0x7FE00010:  # _stop_at_pixels
            if tag == 0xFFFEE00D:
                return None
            break
        if length == 0xFFFFFFFF or value_at + length > end:
            return None
        offset = value_at + length
        if tag not in needed:
            continue
        if not implicit:
            vr = vr_bytes.decode("ascii")
        value: bytes | None
        if length > _DEFER_SIZE and tag != 0x00080005:
            value = None
        elif length:
            value = bytes(raw[value_at:offset])
        else:
            value = cast(bytes | None, empty_value_for_VR(vr, raw=True))
        elements[tag] = RawDataElement(BaseTag(tag), vr, length, value, value_at, implicit, True)
    return elements


def _dataset_of(
    elements: dict[int, RawDataElement], implicit: bool, encoding: str | list[str]
) -> Dataset:
    """The ``Dataset`` pydicom's ``read_dataset`` makes of these elements."""
    dataset = Dataset({element.tag: element for element in elements.values()})
    dataset.set_original_encoding(implicit, True, encoding)
    return dataset


def _read_with_pydicom(raw: bytes | memoryview, syntax: UID) -> Dataset:
    if syntax == DeflatedExplicitVRLittleEndian:
        # Inflating is bounded by the configuration: ``store.inflate`` does it first.
        raise UnreadableDatasetError("a deflated dataset reached the header read uninflated")
    try:
        return read_dataset(
            BytesIO(raw),
            is_implicit_VR=syntax.is_implicit_VR,
            is_little_endian=syntax.is_little_endian,
            stop_when=_stop_at_pixels,
            defer_size=_DEFER_SIZE,
            specific_tags=cast(list[BaseTag | int], _NEEDED_TAGS),
        )
    except Exception as exc:
        raise UnreadableDatasetError(f"cannot parse the dataset: {type(exc).__name__}") from exc


def _stop_at_pixels(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag >= _PIXEL_DATA)


def _uid(parsed: _Parsed, keyword: str, warnings: list[str]) -> str:
    value = _plain_uid(parsed.raw, keyword)
    if value is None:
        try:
            value = parsed.dataset().get(keyword)
        except Exception as exc:
            raise UnreadableDatasetError(f"{keyword} cannot be read") from exc
    if value is None or str(value).strip("\x00 ") == "":
        raise UnreadableDatasetError(f"{keyword} is missing: not a storable instance")
    if isinstance(value, MultiValue):
        raise UnreadableDatasetError(f"{keyword} has several values")
    text = str(value).strip("\x00 ")
    if not _UID_USABLE.fullmatch(text):
        raise UnreadableDatasetError(f"{keyword} is not a usable UID")
    if not _UID_SYNTAX.fullmatch(text):
        warnings.append(f"{keyword} does not follow the UID syntax of PS3.5 9.1")
    return text


def _plain_uid(raw: dict[int, RawDataElement] | None, keyword: str) -> str | None:
    """A scanned UI value as pydicom's ``convert_UI`` decodes it; None: ask pydicom.

    Only a single value in a UI (or implicit) element: what pydicom makes of it is its
    text, ``default_encoding``, trailing NULs and spaces stripped, then whitespace at
    both ends (``UID`` itself strips it). Skipping pydicom's
    conversion and validation of the four UIDs was ~5 % of the node's Python time.
    """
    if raw is None:
        return None
    element = raw.get(_UID_TAGS[keyword])
    if element is None or element.VR not in (None, "UI") or not element.value:
        return None
    text = element.value.decode(default_encoding).rstrip("\0 ")
    return None if "\\" in text else text.strip()  # as UID() strips it


def _routing_attributes(parsed: _Parsed) -> dict[str, JSONValue]:
    """The routing keywords present in the dataset, converted once per distinct raw value.

    The key holds everything the conversion depends on: the tag, the raw bytes and how
    they are encoded (VR, implicit or explicit, byte order) and the character set.
    Scanned elements are looked up in ``parsed.raw`` (plain int keys), not through the
    ``Dataset``'s tag conversions, and their character set is keyed by its raw bytes.
    """
    raw = parsed.raw
    charset: Any
    if raw is not None:
        charset_element = raw.get(0x00080005)
        charset = ("scanned", None if charset_element is None else charset_element.value)
    else:
        charset = _charset_key(parsed.dataset())
    attributes: dict[str, JSONValue] = {}
    for keyword, tag in _ROUTING_TAGS:
        element: Any
        if raw is not None:
            element = raw.get(tag)
            if element is None:
                continue
        else:
            dataset = parsed.dataset()
            if tag not in dataset:
                continue
            try:
                element = dataset.get_item(tag)
            except Exception:  # noqa: BLE001 - a malformed optional element is simply not indexed
                attributes[keyword] = None
                continue
        if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes):
            attributes[keyword] = _json_value(parsed.dataset(), keyword)
            continue
        key = (
            tag,
            element.VR,
            element.value,
            element.is_implicit_VR,
            element.is_little_endian,
            charset,
        )
        try:
            value = _CONVERTED[key]
        except KeyError:
            value = _json_value(parsed.dataset(), keyword)
            if len(_CONVERTED) >= _CONVERTED_MAX:
                _CONVERTED.clear()
            _CONVERTED[key] = value
        # Lists are shared through the cache: each header gets its own copy.
        attributes[keyword] = list(value) if isinstance(value, list) else value
    return attributes


def _charset_key(dataset: Dataset) -> Any:
    """(0008,0005) as a hashable value: it decides how text values decode."""
    try:
        value = dataset.get(_SPECIFIC_CHARACTER_SET)
    except Exception:  # noqa: BLE001 - unreadable here means unreadable for every lookup
        return "unreadable"
    value = getattr(value, "value", value)
    return tuple(value) if isinstance(value, MultiValue | list) else value


def _json_value(dataset: Dataset, keyword: str) -> JSONValue:
    """A JSON-friendly copy of a simple element; numbers stay numbers."""
    try:
        element: DataElement = dataset[keyword]
        return None if element.VR == "SQ" else _plain(element.value)
    except Exception:  # noqa: BLE001 - a malformed optional element is simply not indexed
        return None


def _plain(value: Any) -> JSONValue:
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, PersonName):
        return None  # never index a person's name
    if isinstance(value, bytes):
        return None
    if isinstance(value, Dataset):
        return None
    return str(value)[:256]
