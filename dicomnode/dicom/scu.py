"""The SCU side: C-ECHO and sending files by C-STORE, the way an administrator does.

Files are sent as they are stored: pynetdicom streams each file's dataset bytes without
decoding them (chunked sending), so a presentation context is proposed for every
(SOP class, transfer syntax) pair found, and the batches are split so that no
association proposes more than the 128 contexts PS3.8 allows.

Beside each file's own syntax, a context in Implicit VR Little Endian is proposed (and
Explicit VR Little Endian too for a compressed file): every node must accept Implicit VR
Little Endian (PS3.5 10.1), so a peer that takes nothing else still receives the
instance, converted. An instance for which the peer accepted no context is refused for
good, and the reason names its SOP class and the syntaxes offered; the other failures
(``negotiation``) say whether the connection was refused, the association rejected or
aborted, or the peer timed out.

Over DICOM-TLS (PS3.15 B.1) the peer's certificate is verified, chain and name, before
any PDU goes; a failed handshake is a ``PeerTLSError`` naming the reason and where the
TLS settings come from.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.presentation import build_context

from dicomnode.dicom import negotiation, proposal, sockets
from dicomnode.dicom.adapt import cstore
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.contexts import VERIFICATION_SOP_CLASS
from dicomnode.dicom.negotiation import TracingAE
from dicomnode.dicom.status import describe, is_permanent_failure, is_success, is_warning
from dicomnode.errors import (
    PeerError,
)
from dicomnode.logs import get_logger

log = get_logger(__name__)

DEFAULT_CALLING_AE = "DICOMNODE"
# PS3.4 Annex F: a DICOMDIR's class. It indexes the files on a medium and is no storage
# object; a folder copied from a CD holds one beside the images.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_NO_RESPONSE = "no response"  # replaced by what ended the association (Trace.ended_early)


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
class TlsSettings:
    """DICOM-TLS towards a peer.

    ``context`` is called for each association (``ReloadingContext.current``), so a
    renewed certificate is used by the next one; ``server_name`` is the name the peer's
    certificate must carry (None: the address's host); ``source`` names where these
    settings come from, for failures (``destinations.pacs.tls``, ``--tls-ca``).
    """

    context: Callable[[], ssl.SSLContext]
    server_name: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class ScuSettings:
    calling_ae: str = DEFAULT_CALLING_AE
    connect_timeout_seconds: float = 10.0
    network_timeout_seconds: float = 60.0
    max_pdu_bytes: int = 0  # 0: no limit; lets the peer receive in as few PDUs as it likes
    tls: TlsSettings | None = None  # None: plain TCP


def echo(address: DicomAddress, settings: ScuSettings = ScuSettings()) -> EchoResult:
    """C-ECHO ``address``; raises PeerError when it cannot be associated."""
    ae = _make_ae(settings)
    ae.add_requested_context(VERIFICATION_SOP_CLASS)  # in the toolkit's default syntaxes
    started = time.perf_counter()
    assoc = _associate(ae, address, settings)
    if not assoc.is_established:
        offered = [str(ts) for ts in ae.requested_contexts[0].transfer_syntax]
        raise PeerError(f"{address}: {proposal.refusal(VERIFICATION_SOP_CLASS, offered)}")
    try:
        response = assoc.send_c_echo()
        status = int(getattr(response, "Status", -1)) if response else -1
    finally:
        if assoc.is_established:
            assoc.release()
    if status < 0:
        cause = ae.trace.ended_early(assoc, "C-ECHO", settings.network_timeout_seconds)
        raise PeerError(f"{address}: {cause}")
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
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return SkippedFile(path, "a DICOMDIR (the media's index, not an image): not sent")
    if not sop_class or not sop_instance:
        return SkippedFile(path, "no SOP Class/Instance UID: not a storable instance")
    if not syntax:
        return SkippedFile(path, "no transfer syntax in the file meta")
    return SendableFile(path, sop_class, sop_instance, syntax, path.stat().st_size)


def batches(
    files: Sequence[SendableFile], limit: int = proposal.MAX_CONTEXTS
) -> list[list[SendableFile]]:
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


def _contexts_for(item: SendableFile) -> list[proposal.Context]:
    return proposal.contexts_for(item.sop_class_uid, item.transfer_syntax_uid)


def _proposal_words(batch: Sequence[SendableFile]) -> str:
    return proposal.proposal_words((i.sop_class_uid, i.transfer_syntax_uid) for i in batch)


def _refusal(item: SendableFile) -> str:
    offered = proposal.offered(item.sop_class_uid, item.transfer_syntax_uid)
    return proposal.refusal(item.sop_class_uid, offered)


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
    assoc = _associate(ae, address, settings, describe_proposal=lambda: _proposal_words(batch))
    results: list[FileResult] = []
    if not assoc.is_established:
        # Accepted, but none of the contexts: no instance of this batch can ever go.
        log.warning("presentation_contexts_refused", peer_ae=address.ae_title)
        for item in batch:
            result = FileResult(item.path, None, _refusal(item), refused=True)
            results.append(result)
            if progress is not None:
                progress(result, 0)
        return results
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    ended = ""
    try:
        for number, item in enumerate(batch):
            # PS3.7 9.1.1.1: Message IDs tell requests apart (and make logs readable).
            result = _send_one(assoc, item, accepted, msg_id=number % 0xFFFF + 1)
            if result.note == _NO_RESPONSE:
                ended = ae.trace.ended_early(assoc, "C-STORE", settings.network_timeout_seconds)
                result = replace(result, note=ended)
            results.append(result)
            if progress is not None:
                progress(result, item.size)
            if ended or not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            if ended:
                assoc.abort()
            else:
                assoc.release()
    for item in batch[len(results) :]:
        result = FileResult(item.path, None, f"not sent: {ended or 'the association ended'}")
        results.append(result)
        if progress is not None:
            progress(result, 0)
    return results


def _send_one(
    assoc: Any, item: SendableFile, accepted: set[tuple[str, str]], msg_id: int
) -> FileResult:
    note = ""
    fallback = [ts for ts in proposal.UNCOMPRESSED if (item.sop_class_uid, str(ts)) in accepted]
    if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted and not fallback:
        note = _refusal(item)
        return FileResult(item.path, None, note, refused=True)
    try:
        if (item.sop_class_uid, item.transfer_syntax_uid) in accepted:
            _check_readable(item.path)
            # Streamed from the file, not decoded.
            response = cstore.send_file(
                assoc,
                item.path,
                item.sop_class_uid,
                item.sop_instance_uid,
                item.transfer_syntax_uid,
                msg_id=msg_id,
            )
        else:
            dataset = dcmread(item.path)
            target = _convert(dataset, item, fallback)
            note = f"converted from {UID(item.transfer_syntax_uid).name} to {target.name}"
            response = assoc.send_c_store(dataset, msg_id=msg_id)
    except _Unconvertible as exc:
        return FileResult(item.path, None, str(exc), refused=True)
    except (OSError, InvalidDicomError, EOFError, ValueError, AttributeError) as exc:
        # The stored file is missing or unreadable: this instance fails, the rest go on.
        note = f"cannot read the stored file: {type(exc).__name__}: {exc}"
        return FileResult(item.path, None, note, refused=True)
    status = getattr(response, "Status", None) if response else None
    if status is None:
        return FileResult(item.path, None, _NO_RESPONSE)
    comment = str(getattr(response, "ErrorComment", "") or "")
    text = f"0x{int(status):04X} {describe(int(status))}" + (f": {comment}" if comment else "")
    return FileResult(item.path, int(status), f"{text}; {note}" if note else text)


class _Unconvertible(Exception):  # noqa: N818 - a control-flow signal inside this module
    """The instance cannot be put into a syntax the peer accepted."""


def _check_readable(path: Path) -> None:
    """Raise OSError now if the file cannot be opened: pynetdicom reads it later, on the
    association's own thread, where a missing file would end the association."""
    with path.open("rb") as file:
        file.read(1)


def _convert(dataset: Any, item: SendableFile, fallback: Sequence[UID]) -> UID:
    """Decompress ``dataset`` if need be; returns the syntax it will go in.

    pynetdicom encodes an uncompressed dataset in the accepted context's syntax
    (Explicit to Implicit VR Little Endian and back), so only decompression is done here.
    The instance keeps its UID: the same instance in another transfer syntax (PS3.5 8.2).
    """
    syntax = UID(item.transfer_syntax_uid)
    if syntax.is_compressed:
        try:
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:  # any codec failure: this file cannot go
            raise _Unconvertible(f"cannot decompress: {type(exc).__name__}") from exc
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
    target = syntax if syntax in fallback else fallback[0]
    log.info(
        "transfer_syntax_converted",
        sop_instance_uid=item.sop_instance_uid,
        from_syntax=item.transfer_syntax_uid,
        to_syntax=str(target),
    )
    return target


def _make_ae(settings: ScuSettings) -> TracingAE:
    sockets.apply_library_settings()
    ae = TracingAE(settings.calling_ae)
    ae.connection_timeout = settings.connect_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    ae.acse_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.network_timeout_seconds
    ae.maximum_pdu_size = settings.max_pdu_bytes
    return ae


def _associate(
    ae: TracingAE,
    address: DicomAddress,
    settings: ScuSettings,
    describe_proposal: Callable[[], str] | None = None,
) -> Any:
    """An established association, or one whose peer accepted none of its contexts
    (``is_established`` False: the caller refuses its instances for good).

    Raises PeerError naming what happened: connection refused, association rejected
    (source, reason), aborted by peer, timed out, or the TLS handshake failed.
    """
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, sockets.tune, [settings.network_timeout_seconds]),
        *ae.trace.handlers(),
    ]
    tls = settings.tls
    tls_args = None if tls is None else (tls.context(), tls.server_name or address.host)
    assoc = ae.associate(
        address.host,
        address.port,
        ae_title=address.ae_title,
        evt_handlers=handlers,
        tls_args=tls_args,
    )
    if assoc.is_established:
        ae.trace.established(assoc)
        _return_stolen_responses(assoc)
        return assoc
    if negotiation.accepted_nothing(assoc):
        return assoc
    raise negotiation.failure(
        ae.trace,
        assoc,
        str(address),
        settings.connect_timeout_seconds,
        settings.network_timeout_seconds,
        describe_proposal,
        tls_source="" if tls is None else tls.source,
    )


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
