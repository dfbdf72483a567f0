"""The structural walk: every well-formed dataset passes; each kind of damage is refused
with a reason that names the tag and the problem, short enough for an Error Comment."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
)
from pynetdicom.dsutils import encode

from dicomnode.dicom.adapt import cstore
from dicomnode.domain import Peer, ReceivedInstance
from dicomnode.errors import DatasetTooLargeError, UnreadableDatasetError
from dicomnode.phantom.ct import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.inflate import inflate, inflated
from dicomnode.store.walk import MAX_DEPTH, walk

_ERROR_COMMENT = 64  # (0000,0902) Error Comment is LO


def _explicit(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element; ``length`` overrides the encoded length."""
    size = len(value) if length is None else length
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        return head + struct.pack("<HL", 0, size) + value
    return head + struct.pack("<H", size) + value


def _implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


def _item(content: bytes, undefined: bool = False, length: int | None = None) -> bytes:
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + _DELIMIT_ITEM
    size = len(content) if length is None else length
    return struct.pack("<HHL", 0xFFFE, 0xE000, size) + content


_DELIMIT_ITEM = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_DELIMIT_SEQUENCE = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_MODALITY = _explicit(0x00080060, "CS", b"CT")
_PATIENT_ID = _explicit(0x00100020, "LO", b"ID42")
_ROWS = _explicit(0x00280010, "US", b"\x00\x02")
_ITEM_CONTENT = _explicit(0x00081155, "UI", b"1.2.3.4\x00")


def _sequence(*items: bytes, undefined: bool = True, tag: int = 0x00081140) -> bytes:
    body = b"".join(items)
    if undefined:
        return _explicit(tag, "SQ", body + _DELIMIT_SEQUENCE, 0xFFFFFFFF)
    return _explicit(tag, "SQ", body)


def _phantom() -> Dataset:
    ds = next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=16, columns=16, seed=5)))
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([item, item])
    return ds


def _encoded(ds: Dataset, implicit: bool, little: bool = True) -> bytes:
    data = encode(ds, implicit, little)
    assert data is not None
    return data


def _deflated(data: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


def _refusal(data: bytes, syntax: str = ExplicitVRLittleEndian) -> str:
    with pytest.raises(UnreadableDatasetError) as caught:
        walk(data, syntax)
    reason = str(caught.value)
    assert len(reason) <= _ERROR_COMMENT, reason
    return reason


# -- what passes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("syntax", "implicit", "little"),
    [
        (ImplicitVRLittleEndian, True, True),
        (ExplicitVRLittleEndian, False, True),
        (ExplicitVRBigEndian, False, False),
    ],
    ids=["implicit", "explicit", "big-endian"],
)
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_phantoms_pass_in_every_uncompressed_syntax(
    syntax: str, implicit: bool, little: bool, undefined: bool
) -> None:
    ds = _phantom()
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = undefined
    walk(_encoded(ds, implicit, little), syntax)
    walk(memoryview(_encoded(ds, implicit, little)), syntax)


def test_encapsulated_pixel_data_passes() -> None:
    ds = _phantom()
    ds.PixelData = encapsulate([b"\x01\x02" * 50, b"\x03\x04" * 30], has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    walk(_encoded(ds, False), JPEGLossless)


def test_a_deflated_dataset_passes_once_inflated() -> None:
    data = _encoded(_phantom(), False)
    instance = ReceivedInstance(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3",
        transfer_syntax_uid=DeflatedExplicitVRLittleEndian,
        dataset=memoryview(_deflated(data)),
        peer=Peer(calling_ae="SCU", called_ae="NODE", host="127.0.0.1", port=1),
        association_id=1,
    )
    plain = inflated(instance, 1024 * 1024)
    assert plain.transfer_syntax_uid == ExplicitVRLittleEndian
    assert bytes(plain.dataset) == data
    walk(plain.dataset, plain.transfer_syntax_uid)
    assert inflate(_deflated(data) + b"\0", 1024 * 1024) == data  # a pad byte is allowed


def test_a_unknown_vr_sequence_of_implicit_items_passes() -> None:
    # PS3.5 6.2.2: a UN value of undefined length is an implicit VR little endian sequence.
    inner = _implicit(0x00081155, b"1.2.3.4\x00")
    un = _explicit(0x00091010, "UN", _item(inner, undefined=True) + _DELIMIT_SEQUENCE, 0xFFFFFFFF)
    walk(_explicit(0x00090010, "LO", b"ACME") + un, ExplicitVRLittleEndian)


def test_the_real_ct_series_passes(real_ct_images: list[Path]) -> None:
    for path in real_ct_images:
        offset = cstore._dataset_offset(path)
        assert offset is not None
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        walk(memoryview(path.read_bytes())[offset:], syntax)


# -- what is refused, and why -----------------------------------------------------------


def _zz_in_patient_id() -> bytes:
    return _MODALITY + _explicit(0x00100020, "ZZ", b"ID42") + _ROWS


def _implicit_sent_as_explicit() -> bytes:
    return _encoded(_phantom(), True)


def _length_past_the_end() -> bytes:
    return _MODALITY + _explicit(0x00100020, "UT", b"x" * 100, 0xFFFFFFF0)


def _sequence_without_delimiter() -> bytes:
    return _MODALITY + _sequence(_item(_ITEM_CONTENT))[: -len(_DELIMIT_SEQUENCE)]


def _sequence_without_delimiter_then_element() -> bytes:
    unclosed = _sequence(_item(_ITEM_CONTENT))[: -len(_DELIMIT_SEQUENCE)]
    return _MODALITY + unclosed + _ROWS


def _item_without_delimiter() -> bytes:
    item = _item(_ITEM_CONTENT, undefined=True)[: -len(_DELIMIT_ITEM)]
    return _MODALITY + _explicit(0x00081140, "SQ", item + _DELIMIT_SEQUENCE, 0xFFFFFFFF)


def _item_past_the_sequence() -> bytes:
    item = _item(_ITEM_CONTENT, length=len(_ITEM_CONTENT) + 8)
    return _MODALITY + _sequence(item, undefined=False) + _ROWS


def _element_past_its_item() -> bytes:
    item = _item(_explicit(0x00081155, "UI", b"1.2.3.4\x00", 40))
    return _MODALITY + _sequence(item, undefined=False) + _ROWS + b"\0" * 40


def _element_where_an_item_belongs() -> bytes:
    return _MODALITY + _sequence(_ROWS, undefined=False)


def _fragments(*items: bytes, delimited: bool = True) -> bytes:
    body = b"".join(items) + (_DELIMIT_SEQUENCE if delimited else b"")
    return _MODALITY + _explicit(0x7FE00010, "OB", body, 0xFFFFFFFF)


def _fragments_without_delimiter() -> bytes:
    return _fragments(_item(b""), _item(b"\x01\x02" * 8), delimited=False)


def _fragment_of_undefined_length() -> bytes:
    return _fragments(_item(b""), _item(b"\x01\x02" * 8, length=0xFFFFFFFF))


def _fragments_without_offset_table() -> bytes:
    return _fragments()


def _tags_descending() -> bytes:
    return _PATIENT_ID + _MODALITY + _ROWS


def _tag_twice() -> bytes:
    return _MODALITY + _MODALITY + _ROWS


def _descending_inside_an_item() -> bytes:
    content = _explicit(0x00081155, "UI", b"1.2.3.4\x00") + _explicit(0x00081150, "UI", b"1.2\x00")
    return _MODALITY + _sequence(_item(content))


def _odd_length_us() -> bytes:
    return _MODALITY + _explicit(0x00280010, "US", b"\x00\x02\x00")


def _undefined_length_text() -> bytes:
    return _MODALITY + _explicit(0x00100020, "UT", b"ID42" + _DELIMIT_SEQUENCE, 0xFFFFFFFF)


def _undefined_length_native_pixels() -> bytes:
    return _fragments(_item(b""), _item(b"\x01\x02" * 8))  # fine only when encapsulated


def _trailing_bytes() -> bytes:
    return _MODALITY + _ROWS + b"\x01\x02\x03"


def _delimiter_at_the_top() -> bytes:
    return _MODALITY + _DELIMIT_ITEM + _ROWS


def _too_deep() -> bytes:
    nested = _ITEM_CONTENT
    for _ in range(MAX_DEPTH + 1):
        nested = _sequence(_item(nested), undefined=False)
    return _MODALITY + nested


def _broken_un_sequence() -> bytes:
    items = _item(_implicit(0x00081155, b"1.2.3.4\x00", 400), undefined=True)
    un = _explicit(0x00091010, "UN", items + _DELIMIT_SEQUENCE, 0xFFFFFFFF)
    return _explicit(0x00090010, "LO", b"ACME") + un


def _implicit_sequence_in_a_dictionary_sq() -> bytes:
    item = _item(_implicit(0x00081155, b"1.2.3.4\x00", 4000))
    return _implicit(0x00080060, b"CT") + _implicit(0x00081140, item)


def _command_group_first() -> bytes:
    return _explicit(0x00000005, "CS", b"ISO_IR 100") + _MODALITY + _ROWS


def _file_meta_group_inside() -> bytes:
    return _explicit(0x00020005, "CS", b"ISO_IR 100") + _MODALITY + _ROWS


_EX = ExplicitVRLittleEndian
_DAMAGE: list[tuple[Callable[[], bytes], str, str]] = [
    (_zz_in_patient_id, "(0010,0020) VR 'ZZ' is not a DICOM VR", _EX),
    (_implicit_sent_as_explicit, "is not a DICOM VR", _EX),
    (_length_past_the_end, "(0010,0020) length 4294967280 passes the end", _EX),
    (
        _sequence_without_delimiter,
        "(0008,1140) sequence lacks its delimiter",
        _EX,
    ),
    (
        _sequence_without_delimiter_then_element,
        "(0008,1140) holds (0028,0010) where an item belongs",
        _EX,
    ),
    (_item_without_delimiter, "(0008,1140) item lacks its item delimiter", _EX),
    (_item_past_the_sequence, "(0008,1140) item length 24 passes", _EX),
    (_element_past_its_item, "(0008,1155) length 40 passes the end", _EX),
    (_element_where_an_item_belongs, "(0008,1140) holds (0028,0010)", _EX),
    (_fragments_without_delimiter, "(7FE0,0010) fragments lack their sequence", JPEGLossless),
    (_fragment_of_undefined_length, "(7FE0,0010) fragment length 4294967295", JPEGLossless),
    (_fragments_without_offset_table, "(7FE0,0010) lacks the basic offset table", JPEGLossless),
    (_tags_descending, "(0008,0060) follows (0010,0020): not ascending", _EX),
    (_tag_twice, "(0008,0060) follows (0008,0060): not ascending", _EX),
    (_descending_inside_an_item, "(0008,1150) follows (0008,1155)", _EX),
    (_odd_length_us, "(0028,0010) length 3 is not a multiple of 2", _EX),
    (_undefined_length_text, "(0010,0020) undefined length where", _EX),
    (_undefined_length_native_pixels, "(7FE0,0010) undefined length", _EX),
    (_trailing_bytes, "(0028,0010) is followed by a truncated element", _EX),
    (
        _delimiter_at_the_top,
        "(FFFE,E00D) delimiter or item where an element",
        _EX,
    ),
    (_too_deep, f"(0008,1140) sequences nested deeper than {MAX_DEPTH}", _EX),
    (_broken_un_sequence, "(0008,1155) length 400 passes the end", _EX),
    (_implicit_sequence_in_a_dictionary_sq, "(0008,1155) length 4000", ImplicitVRLittleEndian),
    (_command_group_first, "(0000,0005) group not allowed in a data set", _EX),
    (_file_meta_group_inside, "(0002,0005) group not allowed in a data set", _EX),
]


@pytest.mark.parametrize(
    ("damage", "reason", "syntax"), _DAMAGE, ids=[d.__name__.strip("_") for d, _r, _s in _DAMAGE]
)
def test_each_kind_of_damage_is_refused_with_its_reason(
    damage: Callable[[], bytes], reason: str, syntax: str
) -> None:
    assert reason in _refusal(damage(), syntax)


def test_every_truncation_of_a_phantom_is_refused() -> None:
    for implicit, syntax in ((True, ImplicitVRLittleEndian), (False, ExplicitVRLittleEndian)):
        ds = _phantom()
        ds["ReferencedImageSequence"].is_undefined_length = True
        data = _encoded(ds, implicit)
        walk(data, syntax)
        # A cut between two top-level elements leaves a shorter, well-formed dataset;
        # every other cut must be refused.
        boundaries = {0, len(data)}
        position = 0
        for element in _element_sizes(data, implicit):
            position += element
            boundaries.add(position)
        for cut in range(1, len(data)):
            if cut in boundaries:
                walk(data[:cut], syntax)
            else:
                _refusal(data[:cut], syntax)


def _element_sizes(data: bytes, implicit: bool) -> list[int]:
    """The encoded sizes of a dataset's top-level elements, in order."""
    ds = _phantom()
    ds["ReferencedImageSequence"].is_undefined_length = True
    sizes = []
    for element in ds:
        single = Dataset()
        single.add(element)
        encoded = encode(single, implicit, True)
        assert encoded is not None
        sizes.append(len(encoded))
    assert sum(sizes) == len(data)
    return sizes


# -- inflating ----------------------------------------------------------------------------


def test_a_deflate_bomb_is_refused_once_it_passes_the_limit() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join(deflater.compress(zeros) for _ in range(64)) + deflater.flush()
    assert len(bomb) < 100 * 1024
    with pytest.raises(DatasetTooLargeError, match="max_inflated_bytes"):
        inflate(bomb, 8 * 1024 * 1024)
    assert len(inflate(bomb, 64 * 1024 * 1024)) == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-4], "ends before its stream does"),
        (lambda d: d + b"\0\0", "bytes follow the end"),
        (lambda d: d + b"junk", "bytes follow the end"),
        (lambda d: b"\xff\xff" + d, "corrupt"),
        (lambda d: b"", "ends before its stream does"),
    ],
    ids=["truncated", "two-pad-bytes", "junk-after", "garbage", "empty"],
)
def test_a_corrupt_deflate_stream_is_unreadable(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    data = _deflated(_encoded(_phantom(), False))
    with pytest.raises(UnreadableDatasetError, match=reason):
        inflate(damage(data), 1024 * 1024)
