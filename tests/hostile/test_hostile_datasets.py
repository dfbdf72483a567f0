"""Broken and hostile datasets, sent over the network to a running node.

Measured on e23735d: an explicit-VR element with the VR code ``ZZ``, Implicit VR bytes on
an Explicit VR LE context and an element claiming 0xFFFFFFF0 bytes with 100 present were
all acknowledged 0x0000 and stored, and the stored files failed ``dcmdump``; a 1 MiB
deflated dataset that inflates to 1 GiB was acknowledged and took the node's RSS from
160 MB to 2.2 GB. Now each is refused before anything is stored, and every instance the
node does acknowledge reads completely with pydicom and with DCMTK.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.dsutils import encode
from pynetdicom.presentation import build_context
from sqlalchemy import func, select

from dicomnode.dicom.adapt import cstore
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.database import Database
from dicomnode.store.filemeta import file_meta_bytes
from dicomnode.store.tables import InstanceRow
from dicomnode.testing.hostile import PATHS, peak_rss, start_node
from dicomnode.testing.node import NodeProcess

CT = "1.2.840.10008.5.1.4.1.1.2"
_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLossless)
_SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)


class Sender:
    """One association to the node, sending dataset bytes exactly as given."""

    def __init__(self, port: int, folder: Path, syntaxes: tuple[str, ...] = _SYNTAXES) -> None:
        ae = AE(ae_title="HOSTILE")
        ae.requested_contexts = [build_context(CT, syntax) for syntax in syntaxes]
        self._assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert self._assoc.is_established
        self._folder = folder
        self._sent = 0

    def send(self, data: bytes, syntax: str, sop_instance_uid: str) -> Dataset:
        """C-STORE ``data`` as the dataset; the command carries ``sop_instance_uid``."""
        self._sent += 1
        path = self._folder / f"sent-{self._sent}.dcm"
        path.write_bytes(file_meta_bytes(CT, sop_instance_uid, syntax, "HOSTILE") + data)
        try:
            response: Dataset = self._assoc.send_c_store(path)
        finally:
            path.unlink()
        assert "Status" in response, "no response: the association went down"
        return response

    def release(self) -> None:
        self._assoc.release()


@pytest.fixture(autouse=True)
def raw_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's dataset bytes as they are, not decoded and re-encoded
    (an in-process node sets this too; a node in its own process does not)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture
def sender(node: Node, tmp_path: Path) -> Iterator[Sender]:
    made = Sender(node.scp.port, tmp_path)
    try:
        yield made
    finally:
        made.release()


def phantom(rows: int = 32) -> Dataset:
    ds = next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=rows, columns=rows, seed=11)))
    ds.SOPInstanceUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([item])
    return ds


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    data = encode(ds, implicit, True)
    assert data is not None
    return data


def assert_refused(node: Node, response: Dataset, status: int, reason: str) -> None:
    assert response.Status == status, response
    assert reason in response.ErrorComment
    assert node.index.count_instances() == 0
    assert list(node.spool.names()) == []
    assert list(node.spool.tmp.iterdir()) == []


def assert_still_serves(sender: Sender) -> None:
    ds = phantom()
    assert sender.send(encoded(ds), ExplicitVRLittleEndian, ds.SOPInstanceUID).Status == 0


# -- (a) (b) (c): the datasets e23735d acknowledged ------------------------------------


def test_a_vr_code_that_is_no_vr_is_refused(node: Node, sender: Sender) -> None:
    ds = phantom()
    data = encoded(ds)
    patient_id = data.index(b"\x10\x00\x20\x00LO")
    damaged = data[: patient_id + 4] + b"ZZ" + data[patient_id + 6 :]
    response = sender.send(damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID)
    assert_refused(node, response, 0xC000, "(0010,0020) VR 'ZZ' is not a DICOM VR")
    assert_still_serves(sender)


def test_implicit_vr_bytes_on_an_explicit_vr_context_are_refused(
    node: Node, sender: Sender
) -> None:
    ds = phantom()
    response = sender.send(encoded(ds, implicit=True), ExplicitVRLittleEndian, ds.SOPInstanceUID)
    assert_refused(node, response, 0xC000, "is not a DICOM VR")
    assert_still_serves(sender)


def test_a_length_past_the_end_is_refused(node: Node, sender: Sender) -> None:
    ds = phantom()
    del ds.PixelData
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFF0)
    response = sender.send(
        encoded(ds) + header + b"\x01" * 100, ExplicitVRLittleEndian, ds.SOPInstanceUID
    )
    assert_refused(node, response, 0xC000, "(7FE0,0010) length 4294967280 passes the end")
    assert_still_serves(sender)


# -- (e): sequences, items and fragments -------------------------------------------------


Damage = tuple[bytes, str, str, str]  # dataset, transfer syntax, SOP Instance UID, reason


def _sequence_without_delimiter() -> Damage:
    ds = phantom()
    ds["ReferencedImageSequence"].is_undefined_length = True
    data = encoded(ds)
    at = data.index(_SEQUENCE_DELIMITER)
    damaged = data[:at] + data[at + 8 :]  # the next element is read where an item belongs
    return damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID, "(0008,1140) holds ("


def _item_without_delimiter() -> Damage:
    ds = phantom()
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    data = encoded(ds)
    at = data.index(struct.pack("<HHL", 0xFFFE, 0xE00D, 0))
    damaged = data[:at] + data[at + 8 :]
    return damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID, "(0008,1140) item lacks"


def _item_past_the_sequence() -> Damage:
    ds = phantom()
    data = encoded(ds)
    at = data.index(_ITEM_TAG) + 4  # the phantom's one sequence
    (length,) = struct.unpack_from("<L", data, at)
    damaged = data[:at] + struct.pack("<L", length + 64) + data[at + 4 :]
    return damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID, "(0008,1140) item length"


def _fragments_without_delimiter() -> Damage:
    ds = phantom()
    ds.PixelData = encapsulate([b"\x01\x02" * 64], has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = encoded(ds)
    assert data.endswith(_SEQUENCE_DELIMITER)
    reason = "(7FE0,0010) fragments lack their sequence"
    return data[:-8], JPEGLossless, ds.SOPInstanceUID, reason


def _tags_descending() -> Damage:
    ds = phantom()
    modality = struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"MR"
    reason = "(0008,0060) follows (7FE0,0010)"
    return encoded(ds) + modality, ExplicitVRLittleEndian, ds.SOPInstanceUID, reason


@pytest.mark.parametrize(
    "damage",
    [
        _sequence_without_delimiter,
        _item_without_delimiter,
        _item_past_the_sequence,
        _fragments_without_delimiter,
        _tags_descending,
    ],
    ids=lambda damage: damage.__name__.strip("_"),
)
def test_broken_sequence_and_item_structure_is_refused(
    node: Node, sender: Sender, damage: Callable[[], Damage]
) -> None:
    data, syntax, uid, reason = damage()
    response = sender.send(data, syntax, uid)
    assert_refused(node, response, 0xC000, reason)
    assert_still_serves(sender)


# -- (d): a deflate bomb ---------------------------------------------------------------


def _deflated_dataset(pixel_bytes: int) -> tuple[bytes, str]:
    """A CT whose pixel data is ``pixel_bytes`` of zeros, deflated, without holding them."""
    ds = phantom(rows=8)
    del ds.PixelData
    uid = str(ds.SOPInstanceUID)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pixels = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes)
    parts = [deflater.compress(encoded(ds) + pixels)]
    zeros = b"\0" * (1024 * 1024)
    for start in range(0, pixel_bytes, len(zeros)):
        parts.append(deflater.compress(zeros[: pixel_bytes - start]))
    parts.append(deflater.flush())
    return b"".join(parts), uid


@pytest.fixture(scope="module")
def deflate_bomb() -> tuple[bytes, str]:
    data, uid = _deflated_dataset(1024 * 1024 * 1024)
    assert len(data) < 1100 * 1024  # ~1 MiB that inflates to 1 GiB
    return data, uid


_INFLATE_LIMIT = 32 * 1024 * 1024
# What the node may add while refusing the bomb: the inflated bytes up to its limit,
# pieces in flight, the received dataset; the bomb's 1 GiB must never be held.
_RSS_ALLOWANCE = 3 * _INFLATE_LIMIT + 64 * 1024 * 1024


def test_a_deflate_bomb_is_refused_with_bounded_memory_and_the_limit_is_the_config_s(
    node_process: Callable[..., NodeProcess], tmp_path: Path, deflate_bomb: tuple[bytes, str]
) -> None:
    node = node_process(node={"max_inflated_bytes": _INFLATE_LIMIT}).start()
    process = psutil.Process(node.process.pid)
    syntaxes = (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian)
    sender = Sender(node.port, tmp_path, syntaxes)
    try:
        warm, warm_uid = _deflated_dataset(1024)
        assert sender.send(warm, DeflatedExplicitVRLittleEndian, warm_uid).Status == 0
        baseline = process.memory_info().rss
        bomb, uid = deflate_bomb
        with peak_rss(node.process.pid, interval=0.01) as peak:
            response = sender.send(bomb, DeflatedExplicitVRLittleEndian, uid)
        assert response.Status == 0xA700
        assert "max_inflated_bytes" in response.ErrorComment
        assert peak[0] - baseline < _RSS_ALLOWANCE, (baseline, peak[0])

        # The configured limit, not the default (256 MiB), decides: 40 MiB is refused.
        over, over_uid = _deflated_dataset(40 * 1024 * 1024)
        response = sender.send(over, DeflatedExplicitVRLittleEndian, over_uid)
        assert response.Status == 0xA700
        under, under_uid = _deflated_dataset(8 * 1024 * 1024)
        assert sender.send(under, DeflatedExplicitVRLittleEndian, under_uid).Status == 0
        corrupt = b"\xff\xfe" + warm[2:]
        response = sender.send(corrupt, DeflatedExplicitVRLittleEndian, generate_uid())
        assert response.Status == 0xC000
    finally:
        sender.release()
    stored = list((node.workdir / "var").rglob("objects/*/*.dcm"))
    assert len(stored) == 2, stored  # the warm-up and the 8 MiB one
    for path in stored:
        assert unreadable(path) is None


# -- (f): every acknowledged instance reads completely ----------------------------------


def touch(ds: Dataset) -> None:
    """Convert every element's value, recursing into sequences."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                touch(item)
        else:
            repr(element.value)


def unreadable(path: Path) -> str | None:
    """Why pydicom or DCMTK cannot read the whole file; None when both can."""
    try:
        ds = pydicom.dcmread(path)
        touch(ds)
    except Exception as exc:  # noqa: BLE001 - the reason is the answer
        return f"pydicom: {type(exc).__name__}: {exc}"
    result = subprocess.run(
        ["/usr/bin/dcmdump", str(path)], capture_output=True, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    errors = [line for line in output.splitlines() if line.startswith("E:")]
    if result.returncode or errors:
        return f"dcmdump exit {result.returncode}: {errors[:3]}"
    return None


def _damaged(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.25:
        return data[: rng.randrange(len(data))]
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        damaged[rng.randrange(min(len(damaged), 4096))] = rng.randrange(256)
    return bytes(damaged)


def _cases(real_ct: list[Path], rng: random.Random) -> Iterator[tuple[bytes, str, str]]:
    """(dataset bytes, transfer syntax, the command's SOP Instance UID)."""
    for implicit, syntax in ((False, ExplicitVRLittleEndian), (True, ImplicitVRLittleEndian)):
        for undefined in (False, True):
            ds = phantom()
            ds["ReferencedImageSequence"].is_undefined_length = undefined
            yield encoded(ds, implicit), syntax, str(ds.SOPInstanceUID)
            for _ in range(30):
                ds.SOPInstanceUID = generate_uid()
                yield _damaged(encoded(ds, implicit), rng), syntax, str(ds.SOPInstanceUID)
    for path in real_ct[:3]:
        offset = cstore._dataset_offset(path)
        assert offset is not None
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        real_syntax = str(ds.file_meta.TransferSyntaxUID)
        data = path.read_bytes()[offset:]
        yield data, real_syntax, str(ds.SOPInstanceUID)
        for _ in range(10):
            yield _damaged(data, rng), real_syntax, str(ds.SOPInstanceUID)


@pytest.fixture
def real_ct(request: pytest.FixtureRequest) -> list[Path]:
    """The real CT series when ``DICOMNODE_TEST_DATA`` is set; phantoms alone otherwise."""
    if not os.environ.get("DICOMNODE_TEST_DATA"):
        return []
    images: list[Path] = request.getfixturevalue("real_ct_images")
    return images


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, about the damage
def test_every_acknowledged_instance_reads_completely(
    node: Node, sender: Sender, real_ct: list[Path]
) -> None:
    statuses: dict[int, int] = {}
    for data, syntax, uid in _cases(real_ct, random.Random(20240611)):
        status = int(sender.send(data, syntax, uid).Status)
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses.get(0, 0) >= 4 + 3 * bool(real_ct), statuses  # every undamaged one
    assert statuses.get(0xC000, 0) >= 20, statuses  # the walk refused damage
    assert set(statuses) <= {0x0000, 0xA900, 0xC000}, statuses
    problems = {}
    for series in node.index.list_series():
        for instance in node.index.instances_of(series.id):
            problem = unreadable(node.spool.path(instance.spool_name))
            if problem is not None:
                problems[instance.sop_instance_uid] = problem
    assert problems == {}


# -- the same refusals on both receiving paths --------------------------------------------


def _zz_in_patient_id() -> Damage:
    ds = phantom()
    data = encoded(ds)
    at = data.index(b"\x10\x00\x20\x00LO")
    damaged = data[: at + 4] + b"ZZ" + data[at + 6 :]
    return damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID, "VR 'ZZ' is not a DICOM VR"


def _implicit_on_explicit() -> Damage:
    ds = phantom()
    return encoded(ds, True), ExplicitVRLittleEndian, ds.SOPInstanceUID, "is not a DICOM VR"


def _length_past_the_end() -> Damage:
    ds = phantom()
    del ds.PixelData
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFF0)
    damaged = encoded(ds) + header + b"\x01" * 100
    return damaged, ExplicitVRLittleEndian, ds.SOPInstanceUID, "passes the end"


_EVERY_DAMAGE = [
    _zz_in_patient_id,
    _implicit_on_explicit,
    _length_past_the_end,
    _sequence_without_delimiter,
    _item_without_delimiter,
    _item_past_the_sequence,
    _fragments_without_delimiter,
    _tags_descending,
]


@pytest.fixture(scope="module", params=PATHS)
def path_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A node in its own process on the adapted or pynetdicom's stock receiving path."""
    node = start_node(tmp_path_factory.mktemp(f"node-{request.param}"), request.param)
    try:
        yield node
    finally:
        node.stop()


def test_every_refusal_holds_on_both_receiving_paths(
    path_node: NodeProcess, tmp_path: Path
) -> None:
    """The check lives in the store stage, behind either path: both must refuse alike."""
    database = Database(path_node.config.database_url)
    sender = Sender(path_node.port, tmp_path)
    try:
        for damage in _EVERY_DAMAGE:
            data, syntax, uid, reason = damage()
            response = sender.send(data, syntax, uid)
            assert response.Status == 0xC000, (damage.__name__, response)
            assert reason in response.ErrorComment, (damage.__name__, response.ErrorComment)
        assert_still_serves(sender)
        with database.reading() as session:
            stored = session.scalar(select(func.count()).select_from(InstanceRow))
        assert stored == 1  # only the instance assert_still_serves sent
    finally:
        sender.release()
        database.close()
