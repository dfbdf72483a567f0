"""DICOMweb destinations: STOW-RS to send (PS3.18 10.5), QIDO-RS to check one (10.6).

Files go as they are stored: each one is a part of a ``multipart/related;
type="application/dicom"`` request, its bytes streamed from the spool, never decoded
nor encoded again. That is why the STOW-RS request is made here, on the ``requests``
session that ``dicomweb_client.DICOMwebClient`` wraps, and not by its
``store_instances``: that takes pydicom datasets and writes each one again
(``dcmwrite``), and it raises on HTTP 409 before reading the response that says which
instances failed. The check (``qido_echo``) is the client's ``search_for_studies``.

The response decides each instance (PS3.18 10.5.3): those in ReferencedSOPSequence are
stored (a WarningReason is a warning), those in FailedSOPSequence failed with their
FailureReason, a C-STORE status (0xA7xx out of resources is retried, others are not).
A request the service refuses as a whole raises PeerError: HTTP 401/403 and other 4xx
for good, 408, 429 and 5xx, a refused connection and a timeout for a later attempt.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dicomweb_client import DICOMwebClient

from dicomnode.config import DicomwebAuth, DicomwebDestination
from dicomnode.dicom.scu import FileResult, ProgressCallback, SendableFile
from dicomnode.dicom.status import describe
from dicomnode.errors import ConfigError, PeerError, PeerHTTPError, PeerUnreachableError
from dicomnode.logs import get_logger
from dicomnode.secretfiles import read_secret_file

log = get_logger(__name__)

_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"
_PROCESSING_FAILURE = 0x0110
# Answers worth another attempt later (PS3.18 8.7.3: busy, timed out, rate limited).
_TEMPORARY_HTTP = frozenset({408, 429})
_PART_HEADER = b"Content-Type: application/dicom\r\n\r\n"


@dataclass(frozen=True, slots=True)
class WebSettings:
    """Where and how to reach a DICOMweb service; ``source`` names its configuration
    (``destinations.NAME``) in the reasons given for failures."""

    url: str
    source: str = ""
    authorization: str | None = field(default=None, repr=False)  # the header's value
    ca_certificates: Path | None = None  # None: the system's trust store
    timeout_seconds: float = 60.0
    max_request_bytes: int = 64 * 1024 * 1024


def web_settings(name: str, destination: DicomwebDestination) -> WebSettings:
    """The settings of destination ``name``, its credentials read now (ConfigError for a
    missing file, one other users may read, or an empty one)."""
    source = f"destinations.{name}"
    authorization = None
    if destination.auth is not None:
        authorization = read_authorization(destination.auth, f"{source}.auth")
    return WebSettings(
        url=destination.url,
        source=source,
        authorization=authorization,
        ca_certificates=destination.ca_certificates,
        timeout_seconds=destination.timeout_seconds,
        max_request_bytes=destination.max_request_bytes,
    )


def check_credentials(name: str, destination: DicomwebDestination) -> None:
    """Raise ConfigError now, at ``config check`` or start, for credentials that would
    not load; the values are thrown away."""
    if destination.auth is not None:
        read_authorization(destination.auth, f"destinations.{name}.auth")
    if destination.ca_certificates is not None and not destination.ca_certificates.is_file():
        raise ConfigError(
            f"destinations.{name}.ca_certificates: {destination.ca_certificates} is not a file"
        )


def read_authorization(auth: DicomwebAuth, key: str) -> str:
    """The ``Authorization`` header's value: ``Bearer`` with the token file's content, or
    ``Basic`` (RFC 7617) with the user name and the password file's content."""
    if auth.bearer_token_file is not None:
        token = read_secret_file(auth.bearer_token_file, f"{key}.bearer_token_file", "a token")
        if any(c.isspace() for c in token):
            raise ConfigError(f"{key}.bearer_token_file: the token is more than one word")
        return f"Bearer {token}"
    assert auth.username is not None and auth.password_file is not None  # the model's check
    password = read_secret_file(auth.password_file, f"{key}.password_file", "a password")
    pair = f"{auth.username}:{password}".encode()
    return f"Basic {base64.b64encode(pair).decode('ascii')}"


def _session(settings: WebSettings) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc from the environment: the URL as given
    # Always verified: a bundle of the trusted issuers, or the system's trust store.
    session.verify = str(settings.ca_certificates) if settings.ca_certificates else True
    if settings.authorization is not None:
        session.headers["Authorization"] = settings.authorization
    session.headers["User-Agent"] = "dicomnode"
    return session


def qido_echo(settings: WebSettings) -> float:
    """``GET {url}/studies?limit=1``: seconds it took; raises PeerError saying why the
    service cannot be reached or refused us."""
    with _session(settings) as session:
        client = DICOMwebClient(
            settings.url, session=session, timeout=_timeouts(settings.timeout_seconds)
        )
        client.set_http_retry_params(retry=False)  # one try: the outbox retries
        started = time.perf_counter()
        try:
            client.search_for_studies(limit=1)
        except requests.HTTPError as exc:
            raise _http_error(settings, exc.response) from exc
        except (requests.RequestException, ValueError) as exc:
            raise _transport_error(settings, exc) from exc
        return time.perf_counter() - started


def send_files_stow(
    files: Sequence[SendableFile],
    settings: WebSettings,
    progress: ProgressCallback | None = None,
) -> list[FileResult]:
    """STOW-RS ``files`` to the service, in requests of at most ``max_request_bytes``.

    Returns one result per file, each also given to ``progress``. Raises PeerError when
    a request fails as a whole; files of earlier requests have been reported by then.
    """
    results: list[FileResult] = []
    with _session(settings) as session:
        for batch in stow_batches(files, settings.max_request_bytes):
            results.extend(_send_batch(session, batch, settings, progress))
    return results


def stow_batches(files: Sequence[SendableFile], limit: int) -> list[list[SendableFile]]:
    """Split ``files`` in order so that each request's files add up to at most ``limit``
    bytes; a file larger than that goes alone."""
    result: list[list[SendableFile]] = []
    current: list[SendableFile] = []
    size = 0
    for item in files:
        if current and size + item.size > limit:
            result.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        result.append(current)
    return result


def _send_batch(
    session: requests.Session,
    batch: Sequence[SendableFile],
    settings: WebSettings,
    progress: ProgressCallback | None,
) -> list[FileResult]:
    results: list[FileResult] = []
    readable: list[SendableFile] = []
    for item in batch:
        try:
            item.path.stat()
            readable.append(item)
        except OSError as exc:
            # The stored file is missing: this instance fails, the rest go on.
            note = f"cannot read the stored file: {type(exc).__name__}: {exc.strerror}"
            results.append(_report(FileResult(item.path, None, note, refused=True), progress, 0))
    if not readable:
        return results
    boundary = uuid.uuid4().hex
    body = _MultipartBody([item.path for item in readable], boundary)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        response = session.post(
            f"{settings.url}/studies",
            data=body,
            headers=headers,
            timeout=_timeouts(settings.timeout_seconds),
        )
    except OSError as exc:
        if isinstance(exc, requests.RequestException):
            raise _transport_error(settings, exc) from exc
        # A stored file that went away while being read: retried, then refused if it stays.
        raise PeerError(f"{settings.url}: cannot read a stored file: {exc}") from exc
    finally:
        body.close()
    verdicts = parse_stow_response(response.status_code, response.content)
    if verdicts is None:
        raise _http_error(settings, response)
    for item in readable:
        verdict = verdicts.get(item.sop_instance_uid)
        if verdict is None:
            if response.status_code == 200 and not verdicts:
                # A 200 without a readable body: every instance was stored (PS3.18 10.5.3).
                verdict = FileResult(item.path, 0x0000, "stored (HTTP 200)")
            else:
                note = f"not in the STOW-RS response (HTTP {response.status_code})"
                verdict = FileResult(item.path, None, note)
        results.append(_report(_with_path(verdict, item.path), progress, item.size))
    return results


def parse_stow_response(status_code: int, content: bytes) -> dict[str, FileResult] | None:
    """Each instance the STOW-RS response names, by SOP Instance UID, with its result
    (the path left empty); None when the answer is an error for the whole request.

    Stored instances have status 0x0000, or their WarningReason; failed ones their
    FailureReason (0x0110, processing failure, when it is missing).
    """
    dataset = _json_dataset(content)
    if dataset is None:
        return {} if status_code == 200 else None
    found: dict[str, FileResult] = {}
    for item in _items(dataset, _REFERENCED_SOP_SEQUENCE):
        uid = _first(item, _REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            warning = _first(item, _WARNING_REASON)
            if isinstance(warning, int) and warning:
                found[uid] = FileResult(Path(), warning, f"stored, warning: {_status(warning)}")
            else:
                found[uid] = FileResult(Path(), 0x0000, "stored")
    for item in _items(dataset, _FAILED_SOP_SEQUENCE):
        uid = _first(item, _REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            reason = _first(item, _FAILURE_REASON)
            code = reason if isinstance(reason, int) and reason else _PROCESSING_FAILURE
            found[uid] = FileResult(Path(), code, f"STOW-RS failed: {_status(code)}")
    if not found and status_code >= 400:
        return None
    return found


def _json_dataset(content: bytes) -> dict[str, Any] | None:
    """The DICOM JSON dataset of a response body (PS3.18 F.2), or None."""
    try:
        parsed = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]  # some services answer an array of one dataset
    return parsed if isinstance(parsed, dict) else None


def _items(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _first(item: dict[str, Any], tag: str) -> object:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _status(code: int) -> str:
    return f"0x{code:04X} {describe(code)}"


def _with_path(result: FileResult, path: Path) -> FileResult:
    return FileResult(path, result.status, result.note, result.refused)


def _report(result: FileResult, progress: ProgressCallback | None, size: int) -> FileResult:
    if progress is not None:
        progress(result, size)
    return result


def _timeouts(seconds: float) -> tuple[float, float]:
    """(connect, read): the read timeout is the longest silence between bytes."""
    return (seconds, seconds)


def _http_error(settings: WebSettings, response: requests.Response) -> PeerError:
    """A request refused as a whole: permanent for 4xx but 408 and 429."""
    code = response.status_code
    reason = f"HTTP {code} {response.reason or ''}".strip()
    if code in (401, 403):
        return PeerHTTPError(
            f"{settings.url}: authentication refused ({reason}): check {settings.source}.auth",
            permanent=True,
        )
    if code == 413:
        return PeerHTTPError(
            f"{settings.url}: request too large ({reason}): lower "
            f"{settings.source}.max_request_bytes",
            permanent=True,
        )
    permanent = 400 <= code < 500 and code not in _TEMPORARY_HTTP
    detail = _one_line(response.text)
    return PeerHTTPError(
        f"{settings.url}: {reason}" + (f": {detail}" if detail else ""), permanent=permanent
    )


def _transport_error(settings: WebSettings, exc: Exception) -> PeerError:
    """The DIMSE side's words for the same troubles: refused, timed out, TLS."""
    url, seconds = settings.url, settings.timeout_seconds
    if isinstance(exc, requests.exceptions.SSLError):
        trust = f"{settings.source}.ca_certificates" if settings.source else "the trusted issuers"
        return PeerHTTPError(
            f"{url}: TLS handshake failed: {_one_line(str(exc))}: check {trust}", permanent=True
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return PeerUnreachableError(f"{url}: timed out: no connection within {seconds:g} s")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return PeerUnreachableError(f"{url}: timed out: no answer within {seconds:g} s")
    if isinstance(exc, requests.ConnectionError) and _refused(exc):
        return PeerUnreachableError(f"{url}: connection refused")
    if isinstance(exc, requests.ConnectionError):
        return PeerUnreachableError(f"{url}: connection lost: {_one_line(str(exc))}")
    return PeerError(f"{url}: {type(exc).__name__}: {_one_line(str(exc))}")


def _refused(exc: BaseException) -> bool:
    """Whether a ConnectionRefusedError lies anywhere in the chain (urllib3 wraps it)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        pending.extend([current.__cause__, current.__context__])
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
    return False


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _MultipartBody(io.RawIOBase):
    """A ``multipart/related`` body read part by part from the files, so that a request
    of many instances never sits in memory; its length is known (Content-Length)."""

    def __init__(self, paths: Sequence[Path], boundary: str) -> None:
        super().__init__()
        opening = f"--{boundary}\r\n".encode() + _PART_HEADER
        between = f"\r\n--{boundary}\r\n".encode() + _PART_HEADER
        closing = f"\r\n--{boundary}--\r\n".encode()
        self._pieces: list[bytes | Path] = []
        for number, path in enumerate(paths):
            self._pieces.extend([between if number else opening, path])
        self._pieces.append(closing)
        self._length = sum(
            len(p) if isinstance(p, bytes) else p.stat().st_size for p in self._pieces
        )
        self._index = 0
        self._position = 0
        self._current: io.BufferedReader | io.BytesIO | None = None

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        # requests sends Content-Length as len() less tell(): a failing tell would be 0.
        return self._position

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._index < len(self._pieces):
            if self._current is None:
                piece = self._pieces[self._index]
                self._current = io.BytesIO(piece) if isinstance(piece, bytes) else piece.open("rb")
            count = self._current.readinto(view)
            if count:
                self._position += count
                return count
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()
