"""The header read: ``struct`` scan and pydicom give the same answer, refusal for refusal.

``read_header`` walks the common dataset shape itself (``header._scan``) and leaves the
rest to pydicom. Each case here is read both ways, the second with the scan switched
off, and the outcomes must be equal: the same header, or the same error and message.
The cases are real CT files (when ``DICOMNODE_TEST_DATA`` is set), the node's phantoms
in both VR encodings, hand-made odd shapes, and thousands of damaged copies.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from dicomnode.dicom.adapt import cstore
from dicomnode.domain import Peer, ReceivedInstance
from dicomnode.phantom.ct import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store import header

_IMPLICIT = "1.2.840.10008.1.2"
_EXPLICIT = "1.2.840.10008.1.2.1"
_JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
_PEER = Peer(calling_ae="SCU", called_ae="NODE", host="127.0.0.1", port=1)


def _instance(data: bytes, syntax: str, ds: Dataset | None = None) -> ReceivedInstance:
    return ReceivedInstance(
        sop_class_uid=str(getattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")),
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "1.2.3.4")),
        transfer_syntax_uid=syntax,
        dataset=memoryview(data),
        peer=_PEER,
        association_id=1,
    )


def _outcome(instance: ReceivedInstance) -> Any:
    try:
        return header.read_header(instance)
    except Exception as exc:  # noqa: BLE001 - comparing refusals
        return type(exc), str(exc)


def _both(instance: ReceivedInstance, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    header._CONVERTED.clear()
    header._ENCODINGS.clear()
    fast = _outcome(instance)
    with monkeypatch.context() as patch:
        patch.setattr(header, "_scan", lambda raw, implicit: None)
        header._CONVERTED.clear()
        slow = _outcome(instance)
    return fast, slow


def _phantom() -> Dataset:
    spec = CTPhantomSpec(slices=1, rows=8, columns=8, seed=3)
    return next(iter(ct_phantom_datasets(spec)))


def _latin1() -> Dataset:
    ds = _phantom()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SeriesDescription = "Thorax kontrastmittelverstärkt"
    ds.InstitutionName = "Hôpital"
    return ds


def _with_sequence() -> Dataset:
    ds = _phantom()
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([item])
    return ds


def _with_undefined_length_sequence() -> Dataset:
    ds = _with_sequence()
    ds["ReferencedImageSequence"].is_undefined_length = True
    return ds


def _long_value() -> Dataset:
    ds = _phantom()
    ds.SeriesDescription = "X" * 5000  # over the 4096-byte defer size
    ds.Modality = ""
    return ds


def _datasets() -> Iterator[tuple[str, Dataset]]:
    yield "phantom", _phantom()
    yield "latin1", _latin1()
    yield "sequence", _with_sequence()
    yield "undefined-sequence", _with_undefined_length_sequence()
    yield "long-value", _long_value()


_SYNTAXES = ((_IMPLICIT, True), (_EXPLICIT, False))


@pytest.mark.parametrize(("name", "ds"), list(_datasets()), ids=lambda v: str(v)[:12])
@pytest.mark.parametrize(("syntax", "implicit"), _SYNTAXES, ids=["implicit", "explicit"])
def test_whole_datasets_read_the_same(
    name: str, ds: Dataset, syntax: str, implicit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(ds, implicit, True)
    assert data is not None
    fast, slow = _both(_instance(data, syntax, ds), monkeypatch)
    assert fast == slow
    assert isinstance(fast, header.InstanceHeader), fast


def test_the_common_shape_is_scanned_not_left_to_pydicom() -> None:
    ds = _latin1()
    for syntax, implicit in _SYNTAXES:
        data = encode(ds, implicit, True)
        assert data is not None
        scanned = header._scan(memoryview(data), implicit)
        assert scanned is not None, syntax
        charset = header._encoding_of(scanned.get(0x00080005))
        dataset = header._Parsed(scanned, implicit, charset).dataset()
        assert str(dataset.SeriesDescription) == "Thorax kontrastmittelverstärkt"
    data = encode(_with_sequence(), True, True)
    assert data is not None
    assert header._scan(memoryview(data), True) is not None  # a defined length: skipped
    data = encode(_with_undefined_length_sequence(), True, True)
    assert data is not None
    assert header._scan(memoryview(data), True) is None  # its end must be parsed: pydicom


def _odd_shapes() -> Iterator[tuple[str, bytes, str]]:
    implicit = encode(_phantom(), True, True)
    explicit = encode(_phantom(), False, True)
    assert implicit is not None and explicit is not None
    yield "implicit-sent-as-explicit", implicit, _EXPLICIT
    yield "explicit-sent-as-implicit", explicit, _IMPLICIT
    yield "compressed-syntax", explicit, _JPEG_LOSSLESS
    yield "empty", b"", _IMPLICIT
    yield "five-bytes", explicit[:5], _EXPLICIT
    yield "seven-bytes", explicit[:7], _EXPLICIT
    unknown_vr = bytearray(explicit)
    unknown_vr[12:14] = b"QQ"  # the second element's VR
    yield "unknown-vr", bytes(unknown_vr), _EXPLICIT
    lower_vr = bytearray(explicit)
    lower_vr[12:14] = b"a1"
    yield "not-a-vr", bytes(lower_vr), _EXPLICIT
    delimiter = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    yield "item-delimiter", implicit[:200] + delimiter + implicit[200:], _IMPLICIT
    duplicate = struct.pack("<HHL", 0x0008, 0x0060, 2) + b"MR"
    yield "duplicate-modality", implicit + duplicate, _IMPLICIT
    yield "trailing-bytes", implicit + b"\x01\x02\x03", _IMPLICIT


@pytest.mark.parametrize(("name", "data", "syntax"), list(_odd_shapes()), ids=lambda v: str(v)[:28])
def test_odd_shapes_read_the_same(
    name: str, data: bytes, syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = _both(_instance(data, syntax, _phantom()), monkeypatch)
    assert fast == slow


def _damaged(data: bytes, seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for cut in range(0, len(data), max(1, len(data) // 150)):
        yield data[:cut]
    for _ in range(count):
        damaged = bytearray(data)
        for _flip in range(rng.randint(1, 4)):
            damaged[rng.randrange(min(len(damaged), 1200))] = rng.randrange(256)
        yield bytes(damaged)
    # Characters that decoding and stripping treat specially, where the UIDs are.
    for _ in range(count // 3):
        damaged = bytearray(data)
        damaged[rng.randrange(min(len(damaged), 500))] = rng.choice(b" \t\r\n\0\\.a0\xe9\x7f")
        yield bytes(damaged)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, about the damage
@pytest.mark.parametrize(("syntax", "implicit"), _SYNTAXES, ids=["implicit", "explicit"])
def test_damaged_datasets_are_read_or_refused_the_same(
    syntax: str, implicit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _latin1()
    data = encode(ds, implicit, True)
    assert data is not None
    differences = []
    for number, damaged in enumerate(_damaged(data, seed=7 + implicit, count=1500)):
        fast, slow = _both(_instance(damaged, syntax, ds), monkeypatch)
        if fast != slow:
            differences.append((number, fast, slow))
    assert differences == []


def _real_files() -> list[Path]:
    root = os.environ.get("DICOMNODE_TEST_DATA")
    if not root:
        return []
    return sorted(path for path in Path(root).rglob("*") if path.is_file())


def test_the_real_ct_series_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    files = _real_files()
    if not files:
        pytest.skip("DICOMNODE_TEST_DATA is not set: the real CT series is not available")
    read = 0
    for path in files:
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue  # the folder's README
        ds = dcmread(path)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        offset = cstore._dataset_offset(path)
        assert offset is not None, path.name
        fast, slow = _both(_instance(data[offset:], syntax, ds), monkeypatch)
        assert fast == slow, path.name
        read += isinstance(fast, header.InstanceHeader)
    assert read >= 28
