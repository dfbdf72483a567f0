"""Sending that tells the truth: every way a destination can fail us, named and judged.

Each peer is real (DCMTK storescp, a pynetdicom SCP) or a few lines of socket code where
no real peer misbehaves on demand (one that aborts the association request, one that
never answers). Timeouts are short so the suite stays fast; nothing waits on a sleep.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SegmentationStorage,
)

from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import (
    FileResult,
    ScuSettings,
    SendableFile,
    echo,
    inspect_file,
    send_files,
)
from dicomnode.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    PeerError,
    PeerUnreachableError,
)
from dicomnode.testing.ports import LOOPBACK, free_port, refusing_port, wait_for_port
from dicomnode.testing.process import ManagedProcess
from dicomnode.testing.rawpeer import ABORT_BY_USER, RawPeer
from dicomnode.testing.result_files import write_result_files
from dicomnode.testing.storescp import StoreSCP

FAST = ScuSettings(connect_timeout_seconds=2.0, network_timeout_seconds=2.0)
SEG_AND_SR = [SegmentationStorage, Comprehensive3DSRStorage]


def sendable(paths: list[Path]) -> list[SendableFile]:
    files = [inspect_file(p) for p in paths]
    assert all(isinstance(f, SendableFile) for f in files)
    return [f for f in files if isinstance(f, SendableFile)]


@pytest.fixture(scope="module")
def ct_and_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """Two CT slices, and a SEG and an SR over them, all stored Explicit VR Little Endian."""
    files = write_result_files(tmp_path_factory.mktemp("results"))
    for path in [*files.ct, files.seg, files.sr]:
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return list(files.ct), [files.seg, files.sr]


def address_of(peer: StoreSCP) -> DicomAddress:
    return DicomAddress(peer.ae_title, LOOPBACK, peer.port)


def test_a_peer_accepting_only_implicit_vr_receives_seg_sr_and_ct(
    ct_and_results: tuple[list[Path], list[Path]],
) -> None:
    ct, results = ct_and_results
    with StoreSCP(
        ae_title="IMPLICIT",
        sop_classes=[CTImageStorage, *SEG_AND_SR],
        transfer_syntaxes=[ImplicitVRLittleEndian],
    ) as peer:
        outcome = send_files(sendable([*ct, *results]), address_of(peer), FAST)
        assert all(r.ok for r in outcome), [r.note for r in outcome]
        received = peer.wait_for_files(4)
        by_uid = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, received)}
    for source in [*ct, *results]:
        original = pydicom.dcmread(source)
        arrived = by_uid[original.SOPInstanceUID]
        assert arrived.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert arrived.SOPClassUID == original.SOPClassUID
        if "PixelData" in original:
            assert np.array_equal(arrived.pixel_array, original.pixel_array)


def test_an_instance_whose_class_the_peer_refuses_fails_for_good_and_says_which(
    ct_and_results: tuple[list[Path], list[Path]],
) -> None:
    ct, results = ct_and_results
    with StoreSCP(
        ae_title="CTONLY",
        sop_classes=[CTImageStorage],
        transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ) as peer:
        outcome = send_files(sendable([*results, *ct]), address_of(peer), FAST)
        peer.wait_for_files(2)
    seg, sr, *images = outcome
    assert all(r.ok for r in images)
    for result, name, uid in [
        (seg, "Segmentation Storage", SegmentationStorage),
        (sr, "Comprehensive 3D SR Storage", Comprehensive3DSRStorage),
    ]:
        assert not result.ok and result.permanent
        assert f"no presentation context accepted for {name} ({uid})" in result.note
        assert "offered Explicit VR Little Endian, Implicit VR Little Endian" in result.note


def test_a_lone_instance_of_a_refused_class_fails_for_good_and_says_which(
    ct_and_results: tuple[list[Path], list[Path]],
) -> None:
    """storescp, too, accepts the association with no context: nothing can go."""
    _ct, results = ct_and_results
    with StoreSCP(
        ae_title="CTONLY",
        sop_classes=[CTImageStorage],
        transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ) as peer:
        (outcome,) = send_files(sendable(results[:1]), address_of(peer), FAST)
    assert not outcome.ok and outcome.permanent
    assert f"Segmentation Storage ({SegmentationStorage})" in outcome.note


# pynetdicom's SCP accepts an association even when it refuses every proposed context;
# it runs in a process of its own, as the node's process-wide pynetdicom switches would
# make it accept every storage class.
CT_ONLY_SCP = """
import sys
from pynetdicom import AE
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
ae = AE(ae_title="PYCTONLY")
ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True)
"""


@pytest.fixture
def ct_only_pynetdicom_scp(tmp_path: Path) -> Iterator[DicomAddress]:
    port = free_port()
    process = ManagedProcess(
        [sys.executable, "-c", CT_ONLY_SCP, str(port)], log_path=tmp_path / "scp.log"
    ).start()
    try:
        wait_for_port(port, alive=lambda: process.running, pid=process.pid)
        yield DicomAddress("PYCTONLY", LOOPBACK, port)
    finally:
        process.stop()


def test_an_association_accepted_with_no_context_refuses_its_instances_for_good(
    ct_and_results: tuple[list[Path], list[Path]], ct_only_pynetdicom_scp: DicomAddress
) -> None:
    _ct, results = ct_and_results
    outcome = send_files(sendable(results), ct_only_pynetdicom_scp, FAST)
    assert [r.permanent for r in outcome] == [True, True]
    assert f"Segmentation Storage ({SegmentationStorage})" in outcome[0].note
    assert f"Comprehensive 3D SR Storage ({Comprehensive3DSRStorage})" in outcome[1].note


def test_a_rejection_says_its_source_and_reason(
    ct_and_results: tuple[list[Path], list[Path]],
) -> None:
    ct, _results = ct_and_results
    with (
        StoreSCP(ae_title="NO", extra_args=["--refuse"]) as peer,
        pytest.raises(AssociationRejectedError) as caught,
    ):
        send_files(sendable(ct), address_of(peer), FAST)
    assert caught.value.permanent
    assert "association rejected (service-user, no-reason-given; permanent)" in str(caught.value)


def test_a_closed_port_is_connection_refused_and_temporary(
    ct_and_results: tuple[list[Path], list[Path]],
) -> None:
    ct, _results = ct_and_results
    with pytest.raises(PeerUnreachableError) as caught:
        send_files(sendable(ct), DicomAddress("NOBODY", LOOPBACK, refusing_port()), FAST)
    assert str(caught.value).endswith(": connection refused")
    assert not caught.value.permanent
    with pytest.raises(PeerUnreachableError, match=r": connection refused$"):
        echo(DicomAddress("NOBODY", LOOPBACK, refusing_port()), FAST)


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (ABORT_BY_USER, AssociationAbortedError, "aborted by peer (service-user)"),
        (None, PeerUnreachableError, "timed out: no answer to the association request within"),
    ],
    ids=["aborts", "never-answers"],
)
def test_a_peer_that_aborts_or_never_answers_says_so_and_is_temporary(
    ct_and_results: tuple[list[Path], list[Path]],
    reply: bytes | None,
    error: type[PeerError],
    words: str,
) -> None:
    ct, _results = ct_and_results
    with RawPeer(reply) as peer:
        with pytest.raises(error) as caught:
            send_files(sendable(ct), DicomAddress("FAKE", LOOPBACK, peer.port), FAST)
        with pytest.raises(error):
            echo(DicomAddress("FAKE", LOOPBACK, peer.port), FAST)
    assert words in str(caught.value)
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--abort-after"], "aborted by peer (service-user)"),
        (["--sleep-during", "6"], "timed out: no C-STORE response within 2 s"),
    ],
    ids=["aborts-mid-store", "never-responds"],
)
def test_a_store_the_peer_aborts_or_never_answers_is_temporary_with_its_cause(
    ct_and_results: tuple[list[Path], list[Path]], option: list[str], words: str
) -> None:
    ct, _results = ct_and_results
    with StoreSCP(ae_title="FLAKY", extra_args=option) as peer:
        outcome: list[FileResult] = send_files(sendable(ct), address_of(peer), FAST)
    assert [r.ok or r.permanent for r in outcome] == [False, False]
    assert words in outcome[0].note
    assert outcome[1].note == f"not sent: {outcome[0].note}"
