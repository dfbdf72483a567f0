"""The SCU side: C-ECHO and sending files by C-STORE, the way an administrator does.

Files are sent as they are stored: pynetdicom streams each file's dataset bytes without
decoding them (chunked sending), so a presentation context is proposed for every
(SOP class, transfer syntax) pair found, and the batches are split so that no
association proposes more than the 128 contexts PS3.8 allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context

from dicomnode.dicom import sockets
from dicomnode.dicom.adapt import cstore
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.contexts import VERIFICATION_SOP_CLASS
from dicomnode.dicom.status import describe, is_permanent_failure, is_success, is_warning
from dicomnode.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    PeerError,
    PeerUnreachableError,
)
from dicomnode.logs import get_logger

log = get_logger(__name__)

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
DEFAULT_CALLING_AE = "DICOMNODE"
# Offered beside a compressed file's own syntax, so a peer that cannot take it still can
# receive the instance, decompressed.
_UNCOMPRESSED = (UID(ExplicitVRLittleEndian), UID(ImplicitVRLittleEndian))


@dataclass(frozen=True, slots=True)
class EchoResult:
    status: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SendableFile:
    """A DICOM file and what its presentation context must be."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file: a DIMSE status, or a reason it was never sent."""

    path: Path
    status: int | None
    note: str
    refused: bool = False  # never sendable to this peer as it is (no acceptable context)

    @property
    def ok(self) -> bool:
        return self.status is not None and (is_success(self.status) or is_warning(self.status))

    @property
    def permanent(self) -> bool:
        """Retrying this file unchanged cannot succeed."""
        return self.refused or (self.status is not None and is_permanent_failure(self.status))


ProgressCallback = Callable[[FileResult, int], None]  # (result, bytes sent)


@dataclass(frozen=True, slots=True)
class ScuSettings:
    calling_ae: str = DEFAULT_CALLING_AE
    connect_timeout_seconds: float = 10.0
    network_timeout_seconds: float = 60.0
    max_pdu_bytes: int = 0  # 0: no limit; lets the peer receive in as few PDUs as it likes


def echo(address: DicomAddress, settings: ScuSettings = ScuSettings()) -> EchoResult:
    """C-ECHO ``address``; raises PeerError when it cannot be associated."""
    ae = _make_ae(settings)
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    started = time.perf_counter()
    assoc = _associate(ae, address, settings)
    try:
        response = assoc.send_c_echo()
        status = int(getattr(response, "Status", -1)) if response else -1
    finally:
        assoc.release()
    if status < 0:
        raise PeerError(f"{address}: no C-ECHO response (timeout or aborted)")
    return EchoResult(status=status, seconds=time.perf_counter() - started)


def find_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (folders recursively), sorted for a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def inspect_file(path: Path) -> SendableFile | SkippedFile:
    """Read a file's meta and identity, or say why it cannot be sent."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        return SkippedFile(path, f"not a DICOM file ({type(exc).__name__})")
    meta = ds.file_meta
    sop_class = str(meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID") or "")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID") or "")
    syntax = str(meta.get("TransferSyntaxUID") or "")
    if not sop_class or not sop_instance:
        return SkippedFile(path, "no SOP Class/Instance UID: not a storable instance")
    if not syntax:
        return SkippedFile(path, "no transfer syntax in the file meta")
    return SendableFile(path, sop_class, sop_instance, syntax, path.stat().st_size)


def batches(files: Sequence[SendableFile], limit: int = MAX_CONTEXTS) -> list[list[SendableFile]]:
    """Split ``files`` so that each batch needs at most ``limit`` presentation contexts."""
    result: list[list[SendableFile]] = []
    current: list[SendableFile] = []
    contexts: set[tuple[str, tuple[str, ...]]] = set()
    for item in files:
        needed = set(_contexts_for(item)) - contexts
        if current and len(contexts) + len(needed) > limit:
            result.append(current)
            current, contexts = [], set()
            needed = set(_contexts_for(item))
        contexts |= needed
        current.append(item)
    if current:
        result.append(current)
    return result


def _contexts_for(item: SendableFile) -> list[tuple[str, tuple[str, ...]]]:
    """The exact context, plus an uncompressed fallback for a compressed file."""
    exact = (item.sop_class_uid, (item.transfer_syntax_uid,))
    if UID(item.transfer_syntax_uid) in _UNCOMPRESSED:
        return [exact]
    return [exact, (item.sop_class_uid, _UNCOMPRESSED)]


def send_files(
    files: Sequence[SendableFile],
    address: DicomAddress,
    settings: ScuSettings = ScuSettings(),
    progress: ProgressCallback | None = None,
) -> list[FileResult]:
    """C-STORE ``files`` to ``address``, one association per batch.

    Returns one result per file. Raises PeerError (with ``permanent`` set from the
    rejection) when an association cannot be made; files of earlier batches have been
    reported through ``progress`` by then.
    """
    results: list[FileResult] = []
    for batch in batches(files):
        results.extend(_send_batch(batch, address, settings, progress))
    return results


def _send_batch(
    batch: Sequence[SendableFile],
    address: DicomAddress,
    settings: ScuSettings,
    progress: ProgressCallback | None,
) -> list[FileResult]:
    ae = _make_ae(settings)
    wanted = dict.fromkeys(ctx for item in batch for ctx in _contexts_for(item))
    ae.requested_contexts = [build_context(sop, list(syntaxes)) for sop, syntaxes in wanted]
    assoc = _associate(ae, address, settings)
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    results: list[FileResult] = []
    try:
        for number, item in enumerate(batch):
            # PS3.7 9.1.1.1: Message IDs tell requests apart (and make logs readable).
            result = _send_one(assoc, item, accepted, msg_id=number % 0xFFFF + 1)
            results.append(result)
            if progress is not None:
                progress(result, item.size)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    for item in batch[len(results) :]:
        result = FileResult(item.path, None, "not sent: the association ended early")
        results.append(result)
        if progress is not None:
            progress(result, 0)
    return results


def _send_one(
    assoc: Any, item: SendableFile, accepted: set[tuple[str, str]], msg_id: int
) -> FileResult:
    note = ""
    if (item.sop_class_uid, item.transfer_syntax_uid) in accepted:
        # Streamed from the file, not decoded.
        response = cstore.send_file(
            assoc,
            item.path,
            item.sop_class_uid,
            item.sop_instance_uid,
            item.transfer_syntax_uid,
            msg_id=msg_id,
        )
    elif any((item.sop_class_uid, ts) in accepted for ts in _UNCOMPRESSED):
        dataset = dcmread(item.path)
        try:
            # The same instance in another transfer syntax: it keeps its UID (PS3.5 8.2).
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001 - any codec failure: this file cannot go
            note = f"cannot decompress: {type(exc).__name__}"
            return FileResult(item.path, None, note, refused=True)
        note = f"decompressed from {item.transfer_syntax_uid}"
        log.info(
            "transfer_syntax_converted",
            sop_instance_uid=item.sop_instance_uid,
            from_syntax=item.transfer_syntax_uid,
            to_syntax=str(dataset.file_meta.TransferSyntaxUID),
        )
        response = assoc.send_c_store(dataset, msg_id=msg_id)
    else:
        note = "refused: the peer accepts neither its transfer syntax nor ours"
        return FileResult(item.path, None, note, refused=True)
    status = getattr(response, "Status", None) if response else None
    if status is None:
        return FileResult(item.path, None, "no response (timeout or aborted)")
    comment = str(getattr(response, "ErrorComment", "") or "")
    text = describe(int(status)) + (f": {comment}" if comment else "")
    return FileResult(item.path, int(status), f"{text}; {note}" if note else text)


def _make_ae(settings: ScuSettings) -> AE:
    sockets.apply_library_settings()
    ae = AE(ae_title=settings.calling_ae)
    ae.connection_timeout = settings.connect_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    ae.acse_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.network_timeout_seconds
    ae.maximum_pdu_size = settings.max_pdu_bytes
    return ae


def _associate(ae: AE, address: DicomAddress, settings: ScuSettings) -> Any:
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, sockets.tune, [settings.network_timeout_seconds])]
    assoc = ae.associate(
        address.host, address.port, ae_title=address.ae_title, evt_handlers=handlers
    )
    if assoc.is_established:
        _return_stolen_responses(assoc)
        return assoc
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        result = getattr(answer, "result", None)
        reason = f"{getattr(answer, 'result_str', '')}: {getattr(answer, 'reason_str', '')}"
        # PS3.8 9.3.4: result 1 is rejected-permanent, 2 rejected-transient.
        raise AssociationRejectedError(f"{address}: association rejected ({reason})", result == 1)
    if assoc.is_aborted:
        raise AssociationAbortedError(f"{address}: association aborted")
    raise PeerUnreachableError(f"{address}: cannot connect")


def _return_stolen_responses(assoc: Any) -> None:
    """Work around a race in pynetdicom 3 (pydicom/pynetdicom#435, #875).

    Between two requests, the association's reactor thread can take the next response
    off the DIMSE queue before ``send_c_store`` waits for it; it then logs "Received
    unexpected C-STORE service message", drops it, and the sender waits out the DIMSE
    timeout. A fast peer on a fast link makes this happen every few hundred instances.
    Here the reactor puts any response back on the queue for the waiting sender.
    ``reactor`` closes the race at its source where it is installed; this stays for
    pynetdicom versions that keep their stock loops.
    """
    serve_request = assoc._serve_request
    queue = assoc.dimse.msg_queue

    def serve(message: Any, context_id: int) -> None:
        if message.is_valid_request:
            serve_request(message, context_id)
        else:
            queue.put((context_id, message))

    assoc._serve_request = serve
