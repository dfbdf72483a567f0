"""The real CT series in every transfer syntax a sender may use, stored as sent.

Acceptance: "The real CT series converted with DCMTK (dcmcjpeg, dcmcjpls, dcmcrle) and
GDCM (gdcmconv --j2k) is accepted in each transfer syntax and stored as sent."

Every kind of ``dicomnode.testing.CODECS`` is sent: the seven JPEG, JPEG-LS and RLE
kinds, JPEG 2000 lossless and lossy, and the two uncompressed encodings other than the
originals' (Implicit VR Little Endian, Explicit VR Big Endian, by ``dcmconv``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import split_dataset

from dicomnode.node import Node
from dicomnode.testing import (
    CODECS,
    LOOPBACK,
    Codec,
    HarnessTimeoutError,
    StoreSCP,
    acknowledged_uids,
    convert_files,
    parse_storescu_log,
    poll_until,
    storescu,
)

KINDS: list[Codec] = sorted(CODECS)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2")  # Implicit VR LE second


class ConvertedSeries:
    """The real CT series converted once per kind, shared by the tests of this module.

    All 28 images, not a subset: the acceptance is about the series, and converting it
    takes one to two seconds per kind (each image is its own DCMTK or GDCM process).
    """

    def __init__(self, sources: list[Path], root: Path) -> None:
        self.sources = sources
        self._root = root
        self._made: dict[Codec, list[Path]] = {}

    def of(self, kind: Codec) -> list[Path]:
        if kind not in self._made:
            self._made[kind] = convert_files(self.sources, self._root / kind, kind)
        return self._made[kind]

    def mixed(self) -> list[Path]:
        """Each image once, the kinds taken in turn: every syntax in one series."""
        return [self.of(KINDS[i % len(KINDS)])[i] for i in range(len(self.sources))]


@pytest.fixture(scope="module")
def converted_ct(
    real_ct_images: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> ConvertedSeries:
    return ConvertedSeries(real_ct_images, tmp_path_factory.mktemp("converted"))


def dataset_bytes(path: Path) -> bytes:
    """A file's dataset part: everything after its File Meta Information."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def meta_of(path: Path) -> pydicom.dataset.FileMetaDataset:
    return pydicom.dcmread(path, stop_before_pixels=True).file_meta


def uid_of(path: Path) -> str:
    return str(meta_of(path).MediaStorageSOPInstanceUID)


def syntax_of(path: Path) -> str:
    return str(meta_of(path).TransferSyntaxUID)


@pytest.fixture
def witness() -> Iterator[StoreSCP]:
    """A DCMTK storescp that writes each dataset exactly as it arrived (``+B``).

    storescu re-encodes what it sends: GDCM writes the Source Image Sequence of its lossy
    JPEG 2000 files with undefined length, and storescu sends it with explicit length
    (first difference at byte 790 of I10's dataset). So what storescu delivered is taken
    from this bit-preserving receiver, and the node must have stored exactly that.
    """
    syntaxes = [EXPLICIT_VR_LITTLE_ENDIAN, *(syntax for _tool, syntax in CODECS.values())]
    with StoreSCP(
        ae_title="WITNESS",
        extra_args=["+B"],
        sop_classes=[CT_IMAGE_STORAGE],
        transfer_syntaxes=syntaxes,  # storescp's own +xa list lacks JPEG Process 14
    ) as scp:
        yield scp


def send_with_storescu(files: list[Path], ae_title: str, port: int) -> set[str]:
    """storescu, each file in its own transfer syntax (``-xf``); the acknowledged UIDs."""
    sent = storescu(files, ae_title=ae_title, port=port)
    attempts = parse_storescu_log(sent.stdout)
    refused = [a for a in attempts if not a.acknowledged]
    assert sent.returncode == 0 and not refused, sent.stdout[-3000:]
    assert len(attempts) == len(files)
    return acknowledged_uids(attempts)


def as_storescu_sends(files: list[Path], witness: StoreSCP) -> dict[str, Path]:
    """Each file as storescu puts it on the wire, keyed by SOP Instance UID."""
    assert send_with_storescu(files, witness.ae_title, witness.port) == set(map(uid_of, files))
    delivered = {uid_of(p): p for p in witness.wait_for_files(len(files))}
    for source in files:
        copy = delivered[uid_of(source)]
        # Same syntax, elements and pixels: storescu may change how it encodes, no more.
        # (Values are not compared: Philips private tags do not parse in Implicit VR.)
        sent, original = pydicom.dcmread(copy), pydicom.dcmread(source)
        assert syntax_of(copy) == syntax_of(source), source
        assert list(sent.keys()) == list(original.keys()), source
        assert sent.PixelData == original.PixelData, source
    return delivered


def assert_stored_as_sent(node: Node, sent: dict[str, Path]) -> None:
    """One series holding exactly the instances `sent` (by UID, in the file it was sent
    from), each in the syntax it was sent in, its dataset bytes unchanged."""
    (series,) = node.index.list_series()
    assert (series.modality, series.instance_count) == ("CT", len(sent))
    stored = {row.sop_instance_uid: row for row in node.index.instances_of(series.id)}
    assert stored.keys() == sent.keys()
    for uid, source in sent.items():
        row = stored[uid]
        spooled = node.spool.path(row.spool_name)
        assert row.transfer_syntax_uid == syntax_of(source), source
        assert syntax_of(spooled) == syntax_of(source), source
        assert uid_of(spooled) == uid
        assert dataset_bytes(spooled) == dataset_bytes(source), source


def wait_for_one_released_association(node: Node, instances: int) -> None:
    """The sender's release reaches the node's index a moment after the sender exits."""

    def associations() -> list[tuple[str, int]]:
        return [(a.state, a.instance_count) for a in node.index.associations()]

    with contextlib.suppress(HarnessTimeoutError):  # the assert below shows what came
        poll_until(
            lambda: associations() == [("released", instances)],
            timeout=10,
            what="the association's release",
        )
    assert associations() == [("released", instances)]


# --- DCMTK storescu --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_series_in_each_transfer_syntax_is_stored_as_sent(
    kind: Codec, node: Node, converted_ct: ConvertedSeries, witness: StoreSCP
) -> None:
    files = converted_ct.of(kind)
    assert {syntax_of(p) for p in files} == {CODECS[kind][1]}
    sent = as_storescu_sends(files, witness)

    acknowledged = send_with_storescu(files, node.config.node.ae_title, node.scp.port)

    assert acknowledged == sent.keys()
    assert_stored_as_sent(node, sent)


def test_every_syntax_in_one_association_is_stored_as_sent(
    node: Node, converted_ct: ConvertedSeries, witness: StoreSCP
) -> None:
    files = converted_ct.mixed()
    assert {syntax_of(p) for p in files} == {CODECS[k][1] for k in KINDS}
    sent = as_storescu_sends(files, witness)

    acknowledged = send_with_storescu(files, node.config.node.ae_title, node.scp.port)

    assert acknowledged == sent.keys()
    wait_for_one_released_association(node, len(files))
    assert_stored_as_sent(node, sent)


# --- dicomnode send --------------------------------------------------------------------


_A_ASSOCIATE_RQ = re.compile(r"INCOMING A-ASSOCIATE-RQ PDU =+\n(.*?)=+ END A-ASSOCIATE-RQ", re.S)


class AssociationRequests:
    """The A-ASSOCIATE-RQ PDUs the in-process node received, as pynetdicom dumps them.

    pynetdicom logs each incoming request at DEBUG, context by context; reading that dump
    is the one way to see what a sender proposed without changing the node. The node
    switches pynetdicom's dump handlers off (``sockets.apply_library_settings``); the
    fixture switches them back on for the associations the node accepts afterwards.
    """

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def received(self) -> list[str]:
        records = self._caplog.records
        text = "\n".join(r.getMessage() for r in records if r.name.startswith("pynetdicom"))
        return _A_ASSOCIATE_RQ.findall(text)


@pytest.fixture
def association_requests(
    node: Node, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AssociationRequests]:
    monkeypatch.setattr(pynetdicom_config, "LOG_HANDLER_LEVEL", "standard")
    with caplog.at_level(logging.DEBUG, logger="pynetdicom"):
        yield AssociationRequests(caplog)


_CONTEXT = re.compile(
    r"Context ID:\s+(\d+) \(Proposed\)\n\s+Abstract Syntax: (.+)\n(?:.*\n)*?"
    r"\s+Proposed Transfer Syntax(?:es)?:\n((?: {6}.+(?:\n|$))+)"
)


def proposed_contexts(request: str) -> list[tuple[str, tuple[str, ...]]]:
    """(abstract syntax, transfer syntaxes) of each context, as named in the dump."""
    return [
        (abstract.strip(), tuple(line.strip() for line in syntaxes.strip().splitlines()))
        for _id, abstract, syntaxes in _CONTEXT.findall(request)
    ]


def dumped(uid: str) -> str:
    """How pynetdicom writes a UID in its dumps: ``=Name`` when it knows the UID."""
    named = UID(uid)
    return f"={named.name}" if named.is_valid and named.name != uid else uid


def test_dicomnode_send_proposes_one_context_per_class_and_syntax(
    node: Node,
    converted_ct: ConvertedSeries,
    association_requests: AssociationRequests,
    tmp_path: Path,
) -> None:
    files = converted_ct.mixed()
    syntaxes = list(dict.fromkeys(map(syntax_of, files)))
    assert len(syntaxes) == len(KINDS)

    done = subprocess.run(
        [
            sys.executable, "-m", "dicomnode", "send", "--quiet",
            *(str(p) for p in files),
            "--to", f"{node.config.node.ae_title}@{LOOPBACK}:{node.scp.port}",
        ],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{len(files)} of {len(files)} sent, 0 failed, 0 skipped" in done.stdout, output
    wait_for_one_released_association(node, len(files))

    (request,) = association_requests.received()
    contexts = proposed_contexts(request)
    # Files are sent as stored, so each (SOP class, syntax) pair gets a context of its
    # own proposing that one syntax, once. Beside them the SCU may offer one uncompressed
    # context per SOP class, for peers that refuse a compressed syntax; nothing else.
    exact = sorted((dumped(CT_IMAGE_STORAGE), (dumped(ts),)) for ts in syntaxes)
    fallback = (dumped(CT_IMAGE_STORAGE), tuple(map(dumped, UNCOMPRESSED)))
    assert sorted(c for c in contexts if c in exact) == exact, request
    assert [c for c in contexts if c not in exact] in ([], [fallback]), request
    # pynetdicom streams each file's dataset bytes as they are: the file is what was sent.
    assert_stored_as_sent(node, {uid_of(p): p for p in files})
