"""DCMTK peers on loopback (storescp, storescu, echoscu) and DCMTK/GDCM transcoders.

Facts about DCMTK 3.6.7 as Debian ships it, which the defaults below rest on:

- Nagle's algorithm stays on unless ``TCP_NODELAY=1`` is in the environment (the build
  reads an unset variable as 0). With it on, every C-STORE waits for a delayed ACK:
  28 CT images took 1.37 s instead of 0.11 s. Both ends get ``TCP_NODELAY=1`` by default.
- storescu proposes at most one compressed transfer syntax per run (``-xs``, ``-xv``...)
  and cannot decompress, so a mixed folder fails. To send each file in its own syntax we
  write an association profile (``-xf``) with one presentation context per
  (SOP class, transfer syntax) found in the files.
- storescp listens on 0.0.0.0; 3.6.7 has no option to bind one interface.
- storescp writes each file in place (no rename), so a listed file may be half written.
  Its ``--exec-on-reception`` hook runs only after the file is saved; we use it to keep
  a journal of complete files.
- Executables are called by absolute path: a virtualenv with pynetdicom also has scripts
  named ``storescu`` and ``storescp``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import pydicom
from pydicom.errors import InvalidDicomError

from dicomnode.testing.ports import LOOPBACK, free_port, require_loopback, wait_for_port
from dicomnode.testing.process import (
    HarnessError,
    HarnessTimeoutError,
    ManagedProcess,
    PeerStartError,
    poll_until,
)

BIN = Path("/usr/bin")
MAX_PRESENTATION_CONTEXTS = 128  # PS3.8 9.3.2.2: context IDs are odd numbers 1..255
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

Proposal = Literal["files", "uncompressed"]


def _nodelay_env(tcp_nodelay: bool) -> dict[str, str]:
    return {"TCP_NODELAY": "1" if tcp_nodelay else "0"}


# --- storescp -------------------------------------------------------------------------


class StoreSCP:
    """DCMTK storescp accepting every storage SOP class and transfer syntax, by PID."""

    def __init__(
        self,
        *,
        ae_title: str = "STORESCP",
        output_dir: Path | None = None,
        port: int | None = None,
        tcp_nodelay: bool = True,
        unique_filenames: bool = True,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self._tempdir = tempfile.TemporaryDirectory(prefix="storescp-")
        workdir = Path(self._tempdir.name)
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.output_dir = (output_dir or workdir / "received").resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = workdir / "complete.txt"
        self.log_path = workdir / "storescp.log"
        if "'" in str(self.output_dir) + str(self.journal_path):
            raise ValueError("storescp paths must not contain a single quote")
        argv = [
            str(BIN / "storescp"),
            "-v",
            "-dhl",  # no reverse DNS on each association
            "+xa",  # accept all supported transfer syntaxes
            "+uf" if unique_filenames else "-uf",  # +uf keeps every copy of a resend
            "-aet",
            ae_title,
            "-od",
            str(self.output_dir),
            "-xcr",  # runs in a shell after the file is saved
            f"echo '#p/#f' >> '{self.journal_path}'",
            *extra_args,
            str(self.port),
        ]
        self._process = ManagedProcess(
            argv, log_path=self.log_path, env=_nodelay_env(tcp_nodelay), cwd=workdir
        )
        self._start_timeout = start_timeout

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> Self:
        self._process.start()
        try:
            wait_for_port(self.port, timeout=self._start_timeout, alive=self._alive, pid=self.pid)
        except Exception as exc:
            failure = self._process.describe_failure()
            self.close()
            raise PeerStartError(failure) from exc
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        """Stop storescp by its PID; received files and the journal stay readable."""
        self._process.stop()

    def close(self) -> None:
        """Stop storescp and delete the temporary directory it owns."""
        try:
            self.stop()
        finally:
            self._tempdir.cleanup()

    def _alive(self) -> bool:
        return self._process.running

    def files(self) -> list[Path]:
        """Files completely written so far, in arrival order."""
        try:
            lines = self.journal_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [Path(line) for line in dict.fromkeys(lines) if line]

    def wait_for_files(self, n: int, timeout: float = 10.0) -> list[Path]:
        """Poll until at least `n` files are complete; a sender's return is not enough."""

        def enough() -> bool:
            if len(self.files()) >= n:
                return True
            if not self._alive():
                raise HarnessError(self._process.describe_failure())
            return False

        try:
            poll_until(enough, timeout=timeout, what=f"{n} files in {self.output_dir}")
        except HarnessTimeoutError as exc:
            raise HarnessTimeoutError(f"{exc}; got {len(self.files())}") from exc
        return self.files()

    def log_text(self) -> str:
        return self._process.log_text()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- storescu -------------------------------------------------------------------------


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _contexts_of(paths: Sequence[Path]) -> dict[tuple[str, str], None]:
    """(SOP class, transfer syntax) of each readable DICOM file, in first-seen order."""
    found: dict[tuple[str, str], None] = {}
    for path in _walk(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # storescu skips it too (with -nh) and says so in its log
        meta = ds.file_meta
        sop_class = meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
        syntax = meta.get("TransferSyntaxUID")
        if sop_class and syntax:
            found[(str(sop_class), str(syntax))] = None
    return found


def association_profile(paths: Sequence[Path]) -> str:
    """A storescu ``-xf`` file proposing each file's own transfer syntax, profile "Files".

    Each (SOP class, syntax) gets a context of its own, so the receiver accepts or
    rejects exactly that syntax; each SOP class also gets an uncompressed fallback.
    """
    pairs = list(_contexts_of(paths))
    syntaxes = list(dict.fromkeys(ts for _, ts in pairs))
    classes = list(dict.fromkeys(sop for sop, _ in pairs))
    if len(pairs) + len(classes) > MAX_PRESENTATION_CONTEXTS:
        raise HarnessError(
            f"{len(pairs) + len(classes)} presentation contexts needed, at most "
            f"{MAX_PRESENTATION_CONTEXTS} fit one association; send the files in parts"
        )
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += [f"TransferSyntax{i} = {uid}" for i, uid in enumerate(_UNCOMPRESSED, 1)]
    for i, uid in enumerate(syntaxes, 1):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {uid}"]
    contexts = [f"{sop}\\TS{syntaxes.index(ts) + 1}" for sop, ts in pairs]
    contexts += [f"{sop}\\Uncompressed" for sop in classes]
    lines += ["[[PresentationContexts]]", "[FileContexts]"]
    lines += [f"PresentationContext{i} = {pc}" for i, pc in enumerate(contexts, 1)]
    lines += ["[[Profiles]]", "[Files]", "PresentationContexts = FileContexts", ""]
    return "\n".join(lines)


class StoreSCUProcess:
    """storescu running in the background with a debug log, stopped by PID on exit.

    For tests that disturb a transfer (stop the receiver mid-way) and then ask which
    instances the sender saw acknowledged (`attempts`, `acknowledged_uids`).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        ae_title: str,
        port: int,
        host: str = LOOPBACK,
        calling_ae: str = "STORESCU",
        tcp_nodelay: bool = True,
        propose: Proposal = "files",
        halt_on_failure: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._tempdir = tempfile.TemporaryDirectory(prefix="storescu-")
        workdir = Path(self._tempdir.name)
        self.log_path = workdir / "storescu.log"
        if propose == "files":
            profile = workdir / "association.cfg"
            profile.write_text(association_profile(paths))
            proposal = ["-xf", str(profile), "Files"]
        else:
            proposal = ["-R"]  # only the SOP classes present, uncompressed syntaxes
        argv = [
            str(BIN / "storescu"),
            "-d",  # the only level that logs each response's SOP Instance UID and status
            "-aet",
            calling_ae,
            "-aec",
            ae_title,
            "+sd",
            "+r",
            *([] if halt_on_failure else ["-nh"]),
            *proposal,
            *extra_args,
            require_loopback(host),
            str(port),
            *(str(p) for p in paths),
        ]
        self.process = ManagedProcess(
            argv, log_path=self.log_path, env=_nodelay_env(tcp_nodelay), cwd=workdir
        )

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self.process.popen

    def start(self) -> Self:
        self.process.start()
        return self

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Stop storescu by its PID if it still runs; its log stays readable."""
        self.process.stop()

    def close(self) -> None:
        """Stop storescu and delete its log and association profile."""
        try:
            self.stop()
        finally:
            self._tempdir.cleanup()

    def log_text(self) -> str:
        return self.process.log_text()

    def attempts(self) -> list[StoreAttempt]:
        return parse_storescu_log(self.log_text())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def storescu(
    paths: Sequence[Path],
    *,
    ae_title: str,
    port: int,
    host: str = LOOPBACK,
    calling_ae: str = "STORESCU",
    tcp_nodelay: bool = True,
    propose: Proposal = "files",
    halt_on_failure: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Send files and folders (recursively) with storescu; ``stdout`` holds its debug log.

    A failed store does not raise: check ``returncode`` and `parse_storescu_log`.
    """
    with StoreSCUProcess(
        paths,
        ae_title=ae_title,
        port=port,
        host=host,
        calling_ae=calling_ae,
        tcp_nodelay=tcp_nodelay,
        propose=propose,
        halt_on_failure=halt_on_failure,
        extra_args=extra_args,
    ) as sender:
        code = sender.wait(timeout)
        return subprocess.CompletedProcess(sender.process.argv, code, sender.log_text(), "")


def echoscu(
    *,
    ae_title: str,
    port: int,
    host: str = LOOPBACK,
    calling_ae: str = "ECHOSCU",
    timeout: float = 10.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO; ``returncode`` 0 means the peer answered Success."""
    argv = [str(BIN / "echoscu"), "-v", "-aet", calling_ae, "-aec", ae_title]
    argv += [require_loopback(host), str(port)]
    return subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


# --- what storescu saw ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreAttempt:
    """One C-STORE request storescu sent, and what came back (if anything)."""

    msg_id: int
    path: Path | None
    sop_instance_uid: str | None = None
    status: int | None = None  # the DIMSE status; logged at debug level only
    status_text: str | None = None  # "Success", "Warning: ...", or why it failed

    @property
    def acknowledged(self) -> bool:
        """The receiver answered Success or Warning, i.e. took the instance (PS3.7 C)."""
        if self.status is not None:
            return self.status in (0x0000, 0x0001) or 0xB000 <= self.status <= 0xBFFF
        text = self.status_text or ""
        return text.startswith(("Success", "Warning"))


_SENDING_FILE = re.compile(r"Sending file: (.+)$")
_REQUEST = re.compile(r"Sending Store Request \(MsgID (\d+)")
_RESPONSE_TEXT = re.compile(r"Received Store Response \((.+)\)\s*$")
_RESPONDED_TO = re.compile(r"Message ID Being Responded To\s*: (\d+)")
_INSTANCE_UID = re.compile(r"Affected SOP Instance UID\s*: ([0-9.]+)")
_STATUS = re.compile(r"DIMSE Status\s*: 0x([0-9A-Fa-f]{4})(?::\s*(.*))?$")
_FAILED = re.compile(r"Store Failed, file: ")
_ERROR = re.compile(r"^E: (.+)$")


@dataclass(slots=True)
class _Attempt:
    msg_id: int
    path: Path | None
    uid: str | None = None
    status: int | None = None
    text: str | None = None


def parse_storescu_log(log: str) -> list[StoreAttempt]:
    """Every C-STORE in a storescu ``-v`` or ``-d`` log, in order, with its outcome.

    At ``-d`` the outgoing and incoming DIMSE dumps give the SOP Instance UID and the
    numeric status; at ``-v`` only "Received Store Response (Success)" is printed.
    """
    attempts: dict[int, _Attempt] = {}
    path: Path | None = None
    current: _Attempt | None = None
    block: Literal["out", "in"] | None = None
    target: _Attempt | None = None
    failed = False
    for line in log.splitlines():
        if "OUTGOING DIMSE MESSAGE" in line:
            block, target = "out", current
        elif "INCOMING DIMSE MESSAGE" in line:
            block, target = "in", None
        elif "END DIMSE MESSAGE" in line:
            block = None
        elif m := _SENDING_FILE.search(line):
            path, failed = Path(m.group(1)), False
        elif m := _REQUEST.search(line):
            current = attempts.setdefault(int(m.group(1)), _Attempt(int(m.group(1)), path))
        elif m := _RESPONSE_TEXT.search(line):
            if current is not None:
                current.text = m.group(1)
        elif block == "in" and (m := _RESPONDED_TO.search(line)):
            target = attempts.get(int(m.group(1)))
        elif block is not None and target is not None and (m := _INSTANCE_UID.search(line)):
            target.uid = target.uid or m.group(1)
        elif block == "in" and target is not None and (m := _STATUS.search(line)):
            target.status = int(m.group(1), 16)
            target.text = m.group(2) or target.text
        elif _FAILED.search(line):
            failed = True
        elif failed and current is not None and (m := _ERROR.search(line)):
            if current.status is None and current.text is None:
                current.text = m.group(1)
            failed = False
    return [
        StoreAttempt(a.msg_id, a.path, a.uid, a.status, a.text)
        for a in sorted(attempts.values(), key=lambda a: a.msg_id)
    ]


def acknowledged_uids(attempts: Sequence[StoreAttempt]) -> set[str]:
    """SOP Instance UIDs the sender saw acknowledged; read from the file if not logged."""
    uids: set[str] = set()
    for attempt in attempts:
        if not attempt.acknowledged:
            continue
        uid = attempt.sop_instance_uid
        if uid is None and attempt.path is not None:
            ds = pydicom.dcmread(attempt.path, stop_before_pixels=True)
            uid = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
        if uid:
            uids.add(str(uid))
    return uids


# --- transcoding ----------------------------------------------------------------------

Codec = Literal[
    "jpeg-baseline",
    "jpeg-extended",
    "jpeg-lossless",
    "jpeg-lossless-sv1",
    "jpeg-ls",
    "jpeg-ls-near",
    "rle",
    "j2k",
    "j2k-lossy",
]

CODECS: dict[Codec, tuple[tuple[str, ...], str]] = {
    # kind: (program and options, transfer syntax it produces)
    "jpeg-baseline": (("dcmcjpeg", "+eb"), "1.2.840.10008.1.2.4.50"),  # 8 bits only
    "jpeg-extended": (("dcmcjpeg", "+ee"), "1.2.840.10008.1.2.4.51"),
    "jpeg-lossless": (("dcmcjpeg", "+el"), "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-sv1": (("dcmcjpeg", "+e1"), "1.2.840.10008.1.2.4.70"),
    "jpeg-ls": (("dcmcjpls", "+el"), "1.2.840.10008.1.2.4.80"),
    "jpeg-ls-near": (("dcmcjpls", "+en"), "1.2.840.10008.1.2.4.81"),
    "rle": (("dcmcrle",), "1.2.840.10008.1.2.5"),
    "j2k": (("gdcmconv", "--j2k"), "1.2.840.10008.1.2.4.90"),
    "j2k-lossy": (("gdcmconv", "--j2k", "--lossy", "-r", "10"), "1.2.840.10008.1.2.4.91"),
}
"""Lossy kinds get a new SOP Instance UID (the tools' default, as PS3.3 C.7.6.1.1.5
asks); lossless kinds keep it. ``jpeg-baseline`` turns 12-bit CT into 8 bits."""


def dcmtk_convert(src: Path, dst: Path, kind: Codec) -> str:
    """Transcode `src` into `dst`; returns the transfer syntax UID `dst` now has."""
    (program, *options), _expected = CODECS[kind]
    argv = [str(BIN / program), *options, str(src), str(dst)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not dst.is_file():
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return str(pydicom.dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID)
