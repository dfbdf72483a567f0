"""The pynetdicom adaptations: same bytes on the wire, no busy waiting, version-guarded.

The real-peer tests (DCMTK, Orthanc, the node's own SCU and SCP) run through these
adaptations too; these tests pin what those cannot see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from dicomnode.dicom import adapt, sockets
from dicomnode.dicom.adapt import commandset, pdata, reactor


@pytest.fixture
def echo_server() -> Iterator[int]:
    sockets.apply_library_settings()
    ae = AE("ECHOSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def _request(instance_uid: str = "1.2.3.4") -> C_STORE:
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    request.AffectedSOPInstanceUID = instance_uid
    request.Priority = 2
    return request


def _response(comment: str | None, instance_uid: str | None = "1.2.3.45") -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    response.AffectedSOPInstanceUID = instance_uid
    response.Status = 0xA700 if comment else 0x0000
    response.ErrorComment = comment
    return response


def _stock_stream(primitive: C_STORE, max_pdu: int) -> bytes:
    message = (C_STORE_RSP if primitive.MessageIDBeingRespondedTo is not None else C_STORE_RQ)()
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(1, max_pdu))


def _our_stream(primitive: C_STORE, max_pdu: int) -> bytes:
    encoded = commandset.encode(primitive)
    assert encoded is not None
    command, has_dataset = encoded
    pdvs = pdata.fragments(command, primitive if has_dataset else None, 1, max_pdu)
    return b"".join(pdata.encode_pdus(pdvs))


@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_encoded_blocks_are_the_pdus_pynetdicom_would_send(max_pdu: int) -> None:
    request = _request()
    request.DataSet = BytesIO(bytes(range(256)) * 600)  # 150 KiB: several 16 KiB PDUs
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    stock = b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(1, max_pdu))

    assert b"".join(pdata.encode_pdus(pdata.pdvs(message.encode_msg(1, max_pdu)))) == stock
    assert _our_stream(request, max_pdu) == stock


@pytest.mark.parametrize("max_pdu", [16384, 100, 0])
@pytest.mark.parametrize(
    "primitive",
    [
        _request(),
        _request("1.2.3.45"),
        _response(None),
        _response(None, instance_uid=None),
        _response("internal error while storing"),
        _response("odd length"),
    ],
    ids=["rq", "rq-odd-uid", "rsp", "rsp-no-uid", "rsp-comment", "rsp-odd-comment"],
)
def test_command_sets_are_encoded_as_pynetdicom_encodes_them(
    primitive: C_STORE, max_pdu: int
) -> None:
    if primitive.MessageIDBeingRespondedTo is None:
        primitive.DataSet = BytesIO(b"\x08\x00\x16\x00" + b"x" * 301)
    assert _our_stream(primitive, max_pdu) == _stock_stream(primitive, max_pdu)


@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_a_stored_file_is_streamed_as_pynetdicom_streams_it(max_pdu: int, tmp_path: Path) -> None:
    path = tmp_path / "instance.dcm"
    path.write_bytes(b"meta" * 40 + bytes(range(256)) * 200)
    request = _request()
    request._dataset_path = (path, 160)
    assert _our_stream(request, max_pdu) == _stock_stream(request, max_pdu)


def test_unusual_command_sets_are_left_to_pynetdicom() -> None:
    moved = _request()
    moved.MoveOriginatorApplicationEntityTitle = "MOVER"
    moved.MoveOriginatorMessageID = 3
    accented = _response("Fehler: ungültig")
    assert commandset.encode(moved) is None
    assert commandset.encode(accented) is None


def test_an_idle_association_does_not_spin(echo_server: int) -> None:
    assert adapt.install()  # the pinned pynetdicom is a supported one
    ae = AE("ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", echo_server)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        before = time.process_time()
        time.sleep(1.0)
        # Both ends live in this process: four reactor threads. Polling every 1 ms cost
        # ~0.15 s of CPU a second here; waiting costs a few milliseconds.
        assert time.process_time() - before < 0.08
        started = time.perf_counter()
        for message_id in range(1, 21):
            assert assoc.send_c_echo(msg_id=message_id).Status == 0
        # No 1 ms sleeps on either side: 20 round trips well under 20 ms of sleeping each.
        assert time.perf_counter() - started < 1.0
    finally:
        assoc.release()
    assert assoc.is_released


def test_other_pynetdicom_versions_keep_their_own_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not adapt.adaptable()
    monkeypatch.setattr(pynetdicom, "__version__", "3.0.4")
    monkeypatch.setenv(adapt.STOCK_VARIABLE, "1")
    assert not adapt.adaptable()


def test_a_waker_closed_under_a_writer_is_harmless() -> None:
    waker = reactor.Waker()
    waker.open()
    writers = [threading.Thread(target=lambda: [waker.wake() for _ in range(2000)])]
    for writer in writers:
        writer.start()
    waker.drain()
    waker.close()
    for writer in writers:
        writer.join()
    waker.wake()  # after close: nothing to write to, nothing raised


def test_the_dataset_offset_is_where_pynetdicom_finds_it(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom.dsutils import split_dataset

    from dicomnode.dicom.adapt import cstore

    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    dataset.SOPInstanceUID = "1.2.3.4.5"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "with-meta.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert cstore._dataset_offset(path) == split_dataset(path)[1]

    bare = tmp_path / "no-preamble.dcm"
    bare.write_bytes(b"\x08\x00\x16\x00UI\x04\x001.2\x00")
    assert cstore._dataset_offset(bare) is None  # left to pynetdicom


@pytest.mark.parametrize(
    "primitive",
    [
        _response(None),
        _response(None, instance_uid=None),
        _response("internal error while storing"),
        _response("odd length"),
    ],
    ids=["rsp", "rsp-no-uid", "rsp-comment", "rsp-odd-comment"],
)
def test_store_responses_are_decoded_as_pynetdicom_decodes_them(primitive: C_STORE) -> None:
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.pdu_primitives import P_DATA

    encoded = commandset.encode(primitive)
    assert encoded is not None
    pdata_primitive = P_DATA()
    pdata_primitive.presentation_data_value_list.append((1, b"\x03" + encoded[0]))
    message = DIMSEMessage()
    assert message.decode_msg(pdata_primitive)
    stock = message.message_to_primitive()

    ours = commandset.decode_store_response(encoded[0])

    assert ours is not None
    for keyword in (
        "MessageIDBeingRespondedTo",
        "Status",
        "AffectedSOPClassUID",
        "AffectedSOPInstanceUID",
        "ErrorComment",
        "OffendingElement",
        "DataSet",
    ):
        assert getattr(ours, keyword) == getattr(stock, keyword), keyword
    assert ours.is_valid_response


def test_other_command_sets_are_left_to_pynetdicom() -> None:
    request = _request()
    request.DataSet = BytesIO(b"")
    encoded = commandset.encode(request)
    assert encoded is not None
    assert commandset.decode_store_response(encoded[0]) is None  # a request, not a response
    assert commandset.decode_store_response(b"\x00\x00\x00") is None  # truncated
