"""C-STORE requests served on the connection's thread (``dicomnode.dicom.adapt.direct``).

A pynetdicom SCU talks to a pynetdicom server set up as the node's SCP sets up its own:
what the store function receives, what the SCU gets back, and which requests are left
to pynetdicom's own path. The real-peer tests (DCMTK, Orthanc) go through this path too.
"""

from __future__ import annotations

import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.dicom import sockets
from dicomnode.dicom.adapt import commandset, direct
from dicomnode.dicom.limits import DatasetBudget
from dicomnode.dicom.refusals import Reason

_IMPLICIT = "1.2.840.10008.1.2"
_EXPLICIT = "1.2.840.10008.1.2.1"


@dataclass
class _Server:
    server: ThreadedAssociationServer
    port: int
    stored: list[tuple[str, str, str, bytes, bool]] = field(default_factory=list)
    stock_stores: list[str] = field(default_factory=list)
    answer: tuple[int, str | None] = (0x0000, None)
    refused: list[tuple[str, Reason]] = field(default_factory=list)
    budget: DatasetBudget | None = None


def _dataset(instance_uid: str, size: int = 20_000, syntax: str = _IMPLICIT) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.PatientID = "DIRECT"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 10
    ds.BitsAllocated = 8
    ds.PixelData = bytes(range(256)) * (size // 256)
    return ds


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    sockets.apply_library_settings()
    if not direct.installed():
        pytest.skip("pynetdicom version without the adapted loops")
    options = getattr(request, "param", {})
    ae = AE("DIRECTSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [_IMPLICIT, _EXPLICIT])
    ae.maximum_pdu_size = options.get("max_pdu", 4096)  # a 20 KB dataset in several PDUs
    state: dict[str, _Server] = {}

    def store(
        assoc: Association, sop_class: str, sop_instance: str, syntax: str, data: memoryview
    ) -> tuple[int, str | None]:
        on_dul = isinstance(threading.current_thread(), DULServiceProvider)
        state["server"].stored.append((sop_class, sop_instance, syntax, bytes(data), on_dul))
        return state["server"].answer

    def stock_store(event: evt.Event) -> int:
        state["server"].stock_stores.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def refuse(
        assoc: Association, sop_class: str, sop_instance: str, reason: Reason
    ) -> tuple[int, str | None]:
        state["server"].refused.append((sop_instance, reason))
        return 0xA700, "refused"

    budget = DatasetBudget(
        options.get("max_dataset", 1 << 30), options.get("max_buffered", 1 << 30)
    )
    direct.serve_stores(ae, store, refuse, budget)
    handlers: list[Any] = [(evt.EVT_C_STORE, stock_store), *options.get("handlers", [])]
    running = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    state["server"] = _Server(running, int(running.server_address[1]), budget=budget)
    try:
        yield state["server"]
    finally:
        running.shutdown()


def _associate(port: int, syntax: str = _IMPLICIT) -> Association:
    ae = AE("DIRECTSCU")
    ae.add_requested_context(CTImageStorage, syntax)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DIRECTSCP")
    assert assoc.is_established
    return assoc


def test_requests_are_stored_on_the_connection_thread_and_answered(server: _Server) -> None:
    datasets = [_dataset(f"1.2.826.0.1.3680043.10.1.{n}") for n in range(3)]
    assoc = _associate(server.port)
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assert assoc.send_c_echo().Status == 0x0000  # Verification stays pynetdicom's
    finally:
        assoc.release()
    assert statuses == [0x0000] * 3
    assert server.stock_stores == []
    assert [entry[1] for entry in server.stored] == [ds.SOPInstanceUID for ds in datasets]
    for (sop_class, _uid, syntax, data, on_dul), ds in zip(server.stored, datasets, strict=True):
        assert (sop_class, syntax, on_dul) == (CTImageStorage, _IMPLICIT, True)
        assert data == encode(ds, True, True)  # every fragment, in order, byte for byte


def test_the_context_s_transfer_syntax_is_passed_on(server: _Server) -> None:
    ds = _dataset("1.2.826.0.1.3680043.10.1.9", size=512, syntax=_EXPLICIT)
    assoc = _associate(server.port, _EXPLICIT)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert server.stored[0][2] == _EXPLICIT
    assert server.stored[0][3] == encode(ds, False, True)


def test_a_failure_status_and_its_comment_reach_the_sender(server: _Server) -> None:
    server.answer = (0xA700, "spool is full: No space left on device")
    assoc = _associate(server.port)
    try:
        response = assoc.send_c_store(_dataset("1.2.826.0.1.3680043.10.1.10"))
    finally:
        assoc.release()
    assert response.Status == 0xA700
    assert response.ErrorComment == "spool is full: No space left on device"


def test_a_request_with_an_unplain_uid_is_left_to_pynetdicom(server: _Server) -> None:
    assoc = _associate(server.port)
    try:
        response = assoc.send_c_store(_dataset("1.2.826.0.1.3680043.10.1.x", size=512))
    finally:
        assoc.release()
    assert response.Status == 0x0000
    assert server.stored == []
    assert server.stock_stores == ["1.2.826.0.1.3680043.10.1.x"]


@pytest.mark.parametrize(
    "server", [{"handlers": [(evt.EVT_PDU_RECV, lambda event: None)]}], indirect=True
)
def test_a_listener_for_received_pdus_gets_pynetdicom_s_path(server: _Server) -> None:
    assoc = _associate(server.port)
    try:
        assert assoc.send_c_store(_dataset("1.2.826.0.1.3680043.10.1.11")).Status == 0x0000
    finally:
        assoc.release()
    assert server.stored == []
    assert server.stock_stores == ["1.2.826.0.1.3680043.10.1.11"]


def _pdata(context_id: int, flag: int, fragment: bytes) -> bytes:
    pdv = bytes([flag]) + fragment
    return struct.pack(">BBLLB", 0x04, 0, len(pdv) + 5, len(pdv) + 1, context_id) + pdv


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def test_a_message_that_breaks_the_fragment_rules_aborts_the_association(
    server: _Server,
) -> None:
    assoc = _associate(server.port)
    context_id = next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage
    )
    request = _request_command()
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]  # connected
    assert raw is not None
    # A request's command set, half its dataset, then another command set: PS3.8 E.2
    # allows no new message before the last fragment of the one under way.
    raw.sendall(_pdata(context_id, 0x03, request) + _pdata(context_id, 0x00, b"\0" * 64))
    raw.sendall(_pdata(context_id, 0x03, request))
    assert _wait_for(lambda: assoc.is_aborted), "the node should abort the association"
    assert server.stored == []


def _request_command(message_id: int = 1, instance_uid: bytes = b"1.2.3.4\0") -> bytes:
    elements = [
        (0x0002, CTImageStorage.encode() + b"\0"),
        (0x0100, struct.pack("<H", 0x0001)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0700, struct.pack("<H", 0)),
        (0x0800, struct.pack("<H", 0x0001)),
        (0x1000, instance_uid),
    ]
    body = b"".join(struct.pack("<HHL", 0, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _requests(context_id: int, count: int) -> tuple[bytes, list[bytes]]:
    """``count`` whole C-STORE requests as the wire carries them, and their datasets."""
    wire, datasets = b"", []
    for number in range(1, count + 1):
        dataset = bytes([number]) * (300 + number)
        uid = f"1.2.826.0.1.3680043.10.9.{number}".encode()
        command = _request_command(number, uid + b"\0" * (len(uid) % 2))
        wire += _pdata(context_id, 0x03, command) + _pdata(context_id, 0x02, dataset)
        datasets.append(dataset)
    return wire, datasets


@pytest.mark.parametrize("piece", [0, 1, 7], ids=["all at once", "byte by byte", "7 bytes"])
def test_requests_are_served_however_their_bytes_arrive(server: _Server, piece: int) -> None:
    """Read ahead: PDUs that arrive together are each served, and so are PDUs in pieces."""
    assoc = _associate(server.port)
    context_id = next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage
    )
    wire, datasets = _requests(context_id, 3)
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]  # connected
    assert raw is not None
    try:
        if piece == 0:
            raw.sendall(wire)
        else:
            for start in range(0, len(wire), piece):
                raw.sendall(wire[start : start + piece])
                time.sleep(0.0005)  # lets the server read the pieces apart
        assert _wait_for(lambda: len(server.stored) == 3), server.stored
        assert [stored[3] for stored in server.stored] == datasets
        assert assoc.is_established
    finally:
        assoc.release()


def test_the_request_fields_are_read_only_from_plain_uids() -> None:
    fields = commandset.store_request_fields(_request_command())
    assert fields == commandset.StoreRequest(1, CTImageStorage, "1.2.3.4")
    not_plain = _request_command().replace(b"1.2.3.4\0", b"1.2.3.a\0")
    assert commandset.store_request_fields(not_plain) is None
    assert commandset.decode_store_request(not_plain) is not None  # pynetdicom's to judge


def test_a_pdu_that_claims_gigabytes_costs_only_the_bytes_that_arrive() -> None:
    """A hostile PDU header (length 4 GiB - 1) with 100 bytes behind it, then a close."""

    class _Peer:
        def __init__(self) -> None:
            self.parts = [b"\0" * 100, b""]

        def recv(self, size: int) -> bytes:
            return self.parts.pop(0)

        def recv_into(self, view: memoryview) -> int:
            raise AssertionError("a buffer was made for the whole claimed PDU")

        def setsockopt(self, *args: object) -> None:
            pass  # TCP_QUICKACK

    tracemalloc.start()
    try:
        pdu = direct._take(_Peer(), bytearray(struct.pack(">BBL", 4, 0, 0xFFFFFFFF)), 2**32 + 5)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pdu) == 106  # short: the caller reports the closed connection
    assert peak < 16 * 2**20


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ({"max_dataset": 8192}, Reason.DATASET_TOO_LARGE),
        ({"max_buffered": 8192}, Reason.MEMORY_LIMIT),
    ],
    indirect=["server"],
)
def test_a_dataset_over_the_budget_is_refused_unkept_and_the_association_goes_on(
    server: _Server, reason: Reason
) -> None:
    assoc = _associate(server.port)
    try:
        # 20 KB in 4 KiB PDUs: refused at the third fragment, the rest dropped.
        assert assoc.send_c_store(_dataset("1.2.826.0.1.3680043.10.9.1")).Status == 0xA700
        assert server.budget is not None and server.budget.held == 0
        assert assoc.send_c_store(_dataset("1.2.826.0.1.3680043.10.9.2", size=2048)).Status == 0
    finally:
        assoc.release()
    assert server.refused == [("1.2.826.0.1.3680043.10.9.1", reason)]
    assert [uid for _c, uid, _s, _d, _t in server.stored] == ["1.2.826.0.1.3680043.10.9.2"]
