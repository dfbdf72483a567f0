"""DCMTK storescu on loopback: each file sent in its own transfer syntax.

storescu 3.6.7 proposes at most one compressed transfer syntax per run (``-xs``,
``-xv``...) and cannot decompress, so a mixed folder fails. To send each file in its own
syntax we write an association profile (``-xf``) with one presentation context per
(SOP class, transfer syntax) found in the files.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import pydicom
from pydicom.errors import InvalidDicomError

from dicomnode.testing.executables import BIN, nodelay_env
from dicomnode.testing.ports import LOOPBACK, require_loopback
from dicomnode.testing.process import HarnessError, ManagedProcess
from dicomnode.testing.storescu_log import StoreAttempt, parse_storescu_log

MAX_PRESENTATION_CONTEXTS = 128  # PS3.8 9.3.2.2: context IDs are odd numbers 1..255
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

Proposal = Literal["files", "uncompressed"]


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
            argv, log_path=self.log_path, env=nodelay_env(tcp_nodelay), cwd=workdir
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
