"""The loopback peers of ``dicomnode.testing``, checked against each other on real data."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.testing import (
    CODECS,
    LOOPBACK,
    LOSSY_CODECS,
    Codec,
    HarnessTimeoutError,
    ManagedProcess,
    Orthanc,
    PeerStartError,
    StoreSCP,
    StoreSCUProcess,
    acknowledged_uids,
    convert_files,
    dcmtk_convert,
    echoscu,
    free_port,
    listens,
    parse_storescu_log,
    poll_until,
    require_loopback,
    storescu,
    wait_for_port,
)


def uid_of(path: Path) -> str:
    """The SOP Instance UID a file was stored under (its meta header's)."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)


def syntax_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


@pytest.fixture
def ct_file(real_ct_dir: Path) -> Path:
    """One real CT image, Explicit VR Little Endian, 512 x 512."""
    return real_ct_dir / "I10"


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    """One Orthanc for the module: it takes ~3 s to shut down."""
    with Orthanc() as peer:
        yield peer


@pytest.fixture
def store_scp() -> Iterator[StoreSCP]:
    with StoreSCP(ae_title="TESTSCP") as scp:
        yield scp


# --- ports and processes --------------------------------------------------------------


def test_the_public_api_is_exactly_all() -> None:
    import dicomnode.testing as testing

    public = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(testing.__all__) == public


# Every public name of dcmtk.py before it was split; other code imports them from there.
DCMTK_NAMES = [
    "BIN",
    "CODECS",
    "Codec",
    "MAX_PRESENTATION_CONTEXTS",
    "Proposal",
    "StoreAttempt",
    "StoreSCP",
    "StoreSCUProcess",
    "acknowledged_uids",
    "association_profile",
    "dcmtk_convert",
    "echoscu",
    "parse_storescu_log",
    "storescu",
    "LOOPBACK",
    "free_port",
    "require_loopback",
    "wait_for_port",
    "HarnessError",
    "HarnessTimeoutError",
    "ManagedProcess",
    "PeerStartError",
    "poll_until",
]


def test_the_dcmtk_module_still_exports_what_it_did_before_the_split() -> None:
    dcmtk = importlib.import_module("dicomnode.testing.dcmtk")
    assert set(DCMTK_NAMES) <= set(dcmtk.__all__)
    for name in dcmtk.__all__:
        assert getattr(dcmtk, name) is not None, name
    assert dcmtk.StoreSCP.__module__ == "dicomnode.testing.storescp"


def test_free_port_can_be_bound_and_waited_for() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind((LOOPBACK, port))
        server.listen()
        wait_for_port(port, timeout=2.0, pid=os.getpid())
        assert listens(os.getpid(), port)


def test_wait_for_port_gives_up_on_a_closed_port() -> None:
    with pytest.raises(HarnessTimeoutError):
        wait_for_port(free_port(), timeout=0.2)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "example.org"])
def test_peers_refuse_hosts_off_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(host)
    assert require_loopback("::1") == "::1"


def test_a_process_deaf_to_sigterm_is_killed(tmp_path: Path) -> None:
    deaf = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    deaf += "print('ready', flush=True); time.sleep(60)"
    proc = ManagedProcess([sys.executable, "-c", deaf], log_path=tmp_path / "deaf.log").start()
    try:
        poll_until(lambda: "ready" in proc.log_text(), timeout=10, what="child ready")
    finally:
        code = proc.stop(timeout=0.3)
    assert code == -signal.SIGKILL
    assert not proc.running


def test_a_failing_with_block_still_stops_its_process(tmp_path: Path) -> None:
    sleeper = ManagedProcess(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s.log"
    )
    with pytest.raises(RuntimeError, match="test failed"), sleeper:
        raise RuntimeError("test failed")
    assert sleeper.returncode == -signal.SIGTERM


# --- storescu's log -------------------------------------------------------------------

VERBOSE_LOG = """\
I: Sending file: /data/a.dcm
I: Sending Store Request (MsgID 1, CT)
XMIT: ....
I: Received Store Response (Success)
I: Sending file: /data/b.dcm
I: Sending Store Request (MsgID 2, CT)
XMIT: ..W: DIMSE Warning: (STORESCU,SCP): sendMessage: unable to convert dataset
E: Store Failed, file: /data/b.dcm:
E: 0006:0317 Peer aborted Association (or never connected)
"""

DEBUG_LOG = """\
I: Sending file: /data/c.dcm
I: Sending Store Request (MsgID 1, CT)
D: ===================== OUTGOING DIMSE MESSAGE ====================
D: Message Type                  : C-STORE RQ
D: Message ID                    : 1
D: Affected SOP Instance UID     : 1.2.3.1
D: ======================= END DIMSE MESSAGE =======================
I: Received Store Response
D: ===================== INCOMING DIMSE MESSAGE ====================
D: Message Type                  : C-STORE RSP
D: Message ID Being Responded To : 1
D: Affected SOP Instance UID     : 1.2.3.1
D: DIMSE Status                  : 0xb000: Warning: Coercion of data elements
D: ======================= END DIMSE MESSAGE =======================
I: Sending file: /data/d.dcm
I: Sending Store Request (MsgID 2, CT)
D: ===================== OUTGOING DIMSE MESSAGE ====================
D: Affected SOP Instance UID     : 1.2.3.2
D: ======================= END DIMSE MESSAGE =======================
I: Received Store Response
D: ===================== INCOMING DIMSE MESSAGE ====================
D: Message ID Being Responded To : 2
D: DIMSE Status                  : 0xa700: Refused: Out of resources
D: ======================= END DIMSE MESSAGE =======================
"""


def test_parse_verbose_log_tells_acknowledged_from_failed() -> None:
    first, second = parse_storescu_log(VERBOSE_LOG)
    assert (first.msg_id, first.path, first.acknowledged) == (1, Path("/data/a.dcm"), True)
    assert (second.msg_id, second.path, second.acknowledged) == (2, Path("/data/b.dcm"), False)
    assert second.status_text is not None and "Peer aborted" in second.status_text


def test_parse_debug_log_reads_uids_and_dimse_status() -> None:
    warned, refused = parse_storescu_log(DEBUG_LOG)
    assert (warned.sop_instance_uid, warned.status, warned.acknowledged) == (
        "1.2.3.1",
        0xB000,
        True,
    )
    assert (refused.sop_instance_uid, refused.status, refused.acknowledged) == (
        "1.2.3.2",
        0xA700,
        False,
    )
    assert acknowledged_uids([warned, refused]) == {"1.2.3.1"}


def test_acknowledged_uids_reads_the_file_when_the_log_has_no_uid(ct_file: Path) -> None:
    log = f"I: Sending file: {ct_file}\nI: Sending Store Request (MsgID 1, CT)\n"
    log += "I: Received Store Response (Success)\n"
    assert acknowledged_uids(parse_storescu_log(log)) == {uid_of(ct_file)}


# --- DCMTK peers ----------------------------------------------------------------------


def test_storescu_delivers_a_folder_to_storescp(real_ct_dir: Path, store_scp: StoreSCP) -> None:
    sent = storescu([real_ct_dir], ae_title=store_scp.ae_title, port=store_scp.port)
    attempts = parse_storescu_log(sent.stdout)
    assert sent.returncode == 0, sent.stdout[-2000:]
    # 28 images and DIRFILE; storescu skips the LICENSE text. It sends DIRFILE (a
    # DICOMDIR) as CT Image Storage under the first SOP Instance UID nested in its
    # records, which is I230's: 29 stores, 28 distinct UIDs.
    assert len(attempts) == 29 and all(a.acknowledged for a in attempts)
    received = store_scp.wait_for_files(29)
    images = {uid_of(p) for p in real_ct_dir.iterdir() if p.name.startswith("I")}
    assert acknowledged_uids(attempts) == {uid_of(p) for p in received} == images


def test_echoscu_tells_a_live_peer_from_a_dead_port(store_scp: StoreSCP) -> None:
    assert echoscu(ae_title=store_scp.ae_title, port=store_scp.port).returncode == 0
    assert echoscu(ae_title="NOBODY", port=free_port(), timeout=5).returncode != 0


def test_storescp_will_not_start_on_a_taken_port() -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        with pytest.raises(PeerStartError):
            StoreSCP(port=squatter.getsockname()[1], start_timeout=5).start()


@pytest.mark.parametrize("kind", sorted(CODECS))
def test_conversion_produces_its_transfer_syntax(
    kind: Codec, ct_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / f"{kind}.dcm"
    assert dcmtk_convert(ct_file, out, kind) == CODECS[kind][1] == syntax_of(out)
    original, converted = pydicom.dcmread(ct_file), pydicom.dcmread(out)
    assert converted.pixel_array.shape == original.pixel_array.shape == (512, 512)
    if kind not in LOSSY_CODECS:
        assert np.array_equal(converted.pixel_array, original.pixel_array)
        assert converted.SOPInstanceUID == original.SOPInstanceUID
    else:
        assert converted.SOPInstanceUID != original.SOPInstanceUID


def test_convert_files_keeps_names_and_order(real_ct_images: list[Path], tmp_path: Path) -> None:
    sources = real_ct_images[:4]
    converted = convert_files(sources, tmp_path / "rle", "rle")
    assert [p.name for p in converted] == [p.name for p in sources]
    assert {syntax_of(p) for p in converted} == {CODECS["rle"][1]}
    assert [uid_of(p) for p in converted] == [uid_of(p) for p in sources]


@pytest.fixture
def mixed_folder(ct_file: Path, tmp_path: Path) -> Path:
    """The same image as sent, JPEG-LS, JPEG 2000, RLE and JPEG lossless SV1."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(ct_file, folder / "original.dcm")
    for kind in ("jpeg-ls", "j2k", "rle", "jpeg-lossless-sv1"):
        dcmtk_convert(ct_file, folder / f"{kind}.dcm", kind)
    return folder


def test_each_file_travels_in_its_own_transfer_syntax(
    mixed_folder: Path, store_scp: StoreSCP
) -> None:
    sent = storescu([mixed_folder], ae_title=store_scp.ae_title, port=store_scp.port)
    assert all(a.acknowledged for a in parse_storescu_log(sent.stdout)), sent.stdout[-2000:]
    received = store_scp.wait_for_files(5)
    assert sorted(map(syntax_of, received)) == sorted(map(syntax_of, mixed_folder.iterdir()))


def test_storescp_takes_jpeg_process_14_only_through_a_profile(
    ct_file: Path, tmp_path: Path
) -> None:
    process_14 = tmp_path / "process14.dcm"
    syntax = dcmtk_convert(ct_file, process_14, "jpeg-lossless")
    sop_class = str(pydicom.dcmread(ct_file, stop_before_pixels=True).SOPClassUID)
    with StoreSCP(ae_title="PLAIN") as plain:  # +xa: its fixed list lacks Process 14
        sent = storescu([process_14], ae_title=plain.ae_title, port=plain.port)
        assert not any(a.acknowledged for a in parse_storescu_log(sent.stdout))
    with StoreSCP(ae_title="PROFILE", sop_classes=[sop_class], transfer_syntaxes=[syntax]) as scp:
        sent = storescu([process_14], ae_title=scp.ae_title, port=scp.port)
        assert all(a.acknowledged for a in parse_storescu_log(sent.stdout)), sent.stdout[-2000:]
        (received,) = scp.wait_for_files(1)
        assert syntax_of(received) == syntax == "1.2.840.10008.1.2.4.57"


def test_an_uncompressed_proposal_cannot_carry_compressed_files(
    mixed_folder: Path, store_scp: StoreSCP
) -> None:
    sent = storescu(
        [mixed_folder], ae_title=store_scp.ae_title, port=store_scp.port, propose="uncompressed"
    )
    acknowledged = {
        a.path.name for a in parse_storescu_log(sent.stdout) if a.acknowledged and a.path
    }
    assert acknowledged == {"original.dcm"}


def test_receiver_killed_mid_transfer_keeps_every_acknowledged_instance(
    real_ct_images: list[Path], tmp_path: Path
) -> None:
    # Nagle left on at the receiver makes each C-STORE wait ~40 ms for a delayed ACK,
    # which leaves time to stop it mid-way.
    with (
        StoreSCP(ae_title="SLOW", tcp_nodelay=False, output_dir=tmp_path / "rx") as scp,
        StoreSCUProcess(real_ct_images, ae_title="SLOW", port=scp.port) as sender,
    ):
        scp.wait_for_files(3)
        scp.stop()
        sender.wait(30)
        attempts = sender.attempts()
        received = {uid_of(p) for p in scp.files()}
    acknowledged = acknowledged_uids(attempts)
    assert 3 <= len(acknowledged) < len(real_ct_images)
    assert acknowledged <= received
    assert any(not a.acknowledged for a in attempts)


# --- Orthanc --------------------------------------------------------------------------


def test_orthanc_runs_from_its_own_config_and_stops_by_pid() -> None:
    peer = Orthanc(aet="PACS", sync_storage=False, modalities={"scp": ("SCP", LOOPBACK, 104)})
    with peer:
        config = json.loads(peer.config_path.read_text())
        system = peer.get_json("/system")
        assert listens(peer.pid, peer.dicom_port) and listens(peer.pid, peer.http_port)
        assert peer.log_path.is_relative_to(peer.workdir)
    assert (system["Name"], system["DicomAet"], system["DicomPort"]) == (
        peer.name,
        "PACS",
        peer.dicom_port,
    )
    assert config["SyncStorageArea"] is False and config["Plugins"] == []
    assert config["RemoteAccessAllowed"] is False and config["DicomAlwaysAllowStore"] is True
    assert config["DicomModalities"] == {"scp": ["SCP", LOOPBACK, 104]}
    assert not peer.running and not peer.workdir.exists()


def test_orthanc_stores_an_upload_and_gives_it_back(orthanc: Orthanc, ct_file: Path) -> None:
    orthanc_id = orthanc.upload(ct_file)
    assert orthanc_id in orthanc.instances() and orthanc.series()
    copy = orthanc.instance_file(orthanc_id)
    assert copy == ct_file.read_bytes()  # StorageCompression off: byte for byte
    assert orthanc.instance_tags(orthanc_id)["SOPInstanceUID"] == uid_of(ct_file)


def test_orthanc_sends_to_storescp(orthanc: Orthanc, store_scp: StoreSCP, ct_file: Path) -> None:
    orthanc.put_modality("scp", (store_scp.ae_title, LOOPBACK, store_scp.port))
    answer = orthanc.store_to_modality("scp", [orthanc.upload(ct_file)])
    assert (answer["InstancesCount"], answer["FailedInstancesCount"]) == (1, 0)
    (received,) = store_scp.wait_for_files(1)
    assert uid_of(received) == uid_of(ct_file)


def test_orthanc_receives_from_storescu(orthanc: Orthanc, real_ct_images: list[Path]) -> None:
    files = real_ct_images[:3]
    sent = storescu(files, ae_title=orthanc.aet, port=orthanc.dicom_port)
    acknowledged = acknowledged_uids(parse_storescu_log(sent.stdout))
    stored = {orthanc.instance_tags(i)["SOPInstanceUID"] for i in orthanc.instances()}
    assert acknowledged == {uid_of(p) for p in files}
    assert acknowledged <= stored
