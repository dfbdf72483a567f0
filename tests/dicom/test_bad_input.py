"""Bad input gets a clear answer, nothing lands outside the spool, and the node keeps serving."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.presentation import build_context

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import ScuSettings, echo
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets
from dicomnode.testing.process import poll_until

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def ct_dataset() -> Dataset:
    return next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=32, columns=32)))


def associate(port: int, calling_ae: str = "TESTSCU") -> object:
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [build_context(CT, EXPLICIT_LE)]
    return ae.associate("127.0.0.1", port, ae_title="DICOMNODE")


def store(port: int, dataset: Dataset) -> Dataset:
    assoc = associate(port)
    assert assoc.is_established  # type: ignore[attr-defined]
    try:
        return assoc.send_c_store(dataset)  # type: ignore[attr-defined,no-any-return]
    finally:
        assoc.release()  # type: ignore[attr-defined]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_hostile_sop_instance_uid_never_chooses_a_file_name(
    node: Node, ct_dataset: Dataset, tmp_path: Path
) -> None:
    ct_dataset.SOPInstanceUID = "../../etc/x"
    ct_dataset.file_meta.MediaStorageSOPInstanceUID = "../../etc/x"
    outside_before = files_under(tmp_path) - files_under(node.config.storage.path)

    response = store(node.scp.port, ct_dataset)

    assert response.Status == 0x0000  # usable, if not conformant: stored, with a warning
    (series,) = node.index.list_series()
    (instance,) = node.index.instances_of(series.id)
    assert instance.sop_instance_uid == "../../etc/x"
    spooled = node.spool.path(instance.spool_name).resolve()
    assert spooled.is_relative_to(node.spool.objects.resolve())
    assert "etc" not in instance.spool_name and ".." not in instance.spool_name
    assert files_under(tmp_path) - files_under(node.config.storage.path) == outside_before
    assert not Path("/etc/x").exists()


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("SOPInstanceUID", "1.2.3.4.5.6.7"), ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4")],
)
def test_dataset_uids_that_differ_from_the_command_get_0xa900(
    node: Node, ct_dataset: Dataset, keyword: str, value: str
) -> None:
    assoc = associate(node.scp.port)
    assert assoc.is_established  # type: ignore[attr-defined]
    # The command announces the file's UIDs; the dataset then says otherwise.
    command_uid = ct_dataset.SOPInstanceUID
    setattr(ct_dataset, keyword, value)
    ct_dataset.file_meta.MediaStorageSOPInstanceUID = command_uid
    ct_dataset.file_meta.MediaStorageSOPClassUID = CT
    path = node.config.storage.path.parent / "mismatch.dcm"
    ct_dataset.preamble = b"\0" * 128
    # Not enforce_file_format: that would copy the dataset's UIDs into the file meta.
    pydicom.dcmwrite(path, ct_dataset, enforce_file_format=False)
    try:
        response = assoc.send_c_store(path)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert response.Status == 0xA900
    assert "differs" in response.ErrorComment
    assert node.index.count_instances() == 0


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("SeriesInstanceUID", None, "SeriesInstanceUID is missing"),
        ("StudyInstanceUID", "1." * 40, "not a usable UID"),
    ],
)
def test_unusable_identifying_attributes_get_0xc000(
    node: Node, ct_dataset: Dataset, keyword: str, value: str | None, reason: str
) -> None:
    if value is None:
        delattr(ct_dataset, keyword)
    else:
        setattr(ct_dataset, keyword, value)
    response = store(node.scp.port, ct_dataset)
    assert response.Status == 0xC000
    assert reason in response.ErrorComment
    assert node.index.count_instances() == 0
    assert list(node.spool.names()) == []


def test_a_re_sent_instance_is_stored_once(node: Node, ct_dataset: Dataset) -> None:
    assert store(node.scp.port, ct_dataset).Status == 0
    assert store(node.scp.port, ct_dataset).Status == 0
    assert node.index.count_instances() == 1
    assert len(list(node.spool.names())) == 1
    (series,) = node.index.list_series()
    assert series.instance_count == 1


def test_a_caller_not_in_callers_is_rejected(
    node_factory: Callable[..., Node], ct_dataset: Dataset
) -> None:
    node = node_factory(callers=["PACS", "MODALITY@127.0.0.2"])
    stranger = associate(node.scp.port, calling_ae="STRANGER")
    assert stranger.is_rejected  # type: ignore[attr-defined]
    # The right AE title from the wrong host is a stranger too.
    wrong_host = associate(node.scp.port, calling_ae="MODALITY")
    assert wrong_host.is_rejected  # type: ignore[attr-defined]
    pacs = associate(node.scp.port, calling_ae="PACS")
    assert pacs.is_established  # type: ignore[attr-defined]
    assert pacs.send_c_store(ct_dataset).Status == 0  # type: ignore[attr-defined]
    pacs.release()  # type: ignore[attr-defined]


def test_a_wrong_called_ae_title_is_rejected(node: Node) -> None:
    result = subprocess.run(
        ["/usr/bin/echoscu", "-aec", "NOTUS", "127.0.0.1", str(node.scp.port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr


def test_a_client_stalled_mid_pdu_is_dropped_while_others_keep_sending(
    node_factory: Callable[..., Node], ct_dataset: Dataset
) -> None:
    node = node_factory(node={"idle_timeout_seconds": 1.0})
    stalled = socket.create_connection(("127.0.0.1", node.scp.port))
    try:
        # Half an A-ASSOCIATE-RQ header: type 0x01, then silence.
        stalled.sendall(b"\x01\x00\x00\x00")
        for _ in range(3):
            ct_dataset.SOPInstanceUID = generate_uid()
            assert store(node.scp.port, ct_dataset).Status == 0
        stalled.settimeout(10)
        # The node closes the stalled connection: recv returns b"" (or a reset).
        try:
            data = stalled.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data == b""
    finally:
        stalled.close()
    assert node.index.count_instances() == 3


def test_a_write_error_gets_0xa700_and_the_node_keeps_serving(
    node: Node, ct_dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomnode.store.spool as spool_module

    real_fsync = spool_module.os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", failing_fsync)
    response = store(node.scp.port, ct_dataset)
    assert response.Status == 0xA700
    assert calls["n"] >= 1
    assert list(node.spool.names()) == []
    assert list(node.spool.tmp.iterdir()) == []

    monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
    assert store(node.scp.port, ct_dataset).Status == 0
    assert node.index.count_instances() == 1


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, a real full disk; needs root (CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_gets_0xa700_and_the_node_recovers_when_space_returns(
    tiny_tmpfs: Path, node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    # tiny_tmpfs first: it is then unmounted after the node stopped and let go of its
    # storage lock file, not before (umount would find the file system busy).
    # The high-water mark is off (100 %), so the write itself meets the full disk.
    node = node_factory(
        storage={"path": str(tiny_tmpfs), "high_water_percent": 100},
        database={"url": f"sqlite:///{tmp_path / 'index.db'}"},
    )
    filler = tiny_tmpfs / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * (1024 * 1024 - 64 * 1024))  # leave 64 KiB: less than one image
    big = next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=256, columns=256)))
    response = store(node.scp.port, big)
    assert response.Status == 0xA700
    assert "full" in response.ErrorComment
    assert echo(parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"), ScuSettings()).status == 0

    filler.unlink()
    assert store(node.scp.port, big).Status == 0
    stored = node.index.instances_of(node.index.list_series()[0].id)
    assert len(stored) == 1
    assert (
        pydicom.dcmread(node.spool.path(stored[0].spool_name)).SOPInstanceUID == big.SOPInstanceUID
    )
    poll_until(lambda: not list(node.spool.tmp.iterdir()), timeout=5, what="no temporary files")
