"""DCMTK storescp on loopback, accepting every storage SOP class and transfer syntax.

Facts about storescp 3.6.7 that shape this class:

- It listens on 0.0.0.0; 3.6.7 has no option to bind one interface.
- It writes each file in place (no rename), so a listed file may be half written.
  Its ``--exec-on-reception`` hook runs only after the file is saved; we use it to keep
  a journal of complete files.
- ``+xa`` ("accept all supported transfer syntaxes") is a fixed list that lacks JPEG
  Lossless Process 14 (1.2.840.10008.1.2.4.57) among others; an ``-xf`` profile accepts
  whatever syntaxes it names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomnode.testing.executables import BIN, nodelay_env
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.process import (
    HarnessError,
    HarnessTimeoutError,
    ManagedProcess,
    PeerStartError,
    poll_until,
)


def acceptor_profile(sop_classes: Sequence[str], transfer_syntaxes: Sequence[str]) -> str:
    """A storescp ``-xf`` file accepting each SOP class in each syntax, profile "Accept".

    An SCP profile has one context per abstract syntax (DCMTK's rule) listing the
    syntaxes in order of preference; a proposal of one syntax gets exactly that one.
    """
    if not sop_classes or not transfer_syntaxes:
        raise ValueError("an acceptor profile needs SOP classes and transfer syntaxes")
    lines = ["[[TransferSyntaxes]]", "[Accepted]"]
    lines += [f"TransferSyntax{i} = {uid}" for i, uid in enumerate(transfer_syntaxes, 1)]
    lines += ["[[PresentationContexts]]", "[AcceptedContexts]"]
    lines += [
        f"PresentationContext{i} = {sop}\\Accepted"
        for i, sop in enumerate(dict.fromkeys(sop_classes), 1)
    ]
    lines += ["[[Profiles]]", "[Accept]", "PresentationContexts = AcceptedContexts", ""]
    return "\n".join(lines)


class StoreSCP:
    """DCMTK storescp accepting every storage SOP class and transfer syntax, by PID.

    "Every" is what ``+xa`` lists; pass `sop_classes` and `transfer_syntaxes` to accept
    exactly those instead (e.g. JPEG Lossless Process 14, which ``+xa`` lacks).
    """

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
        sop_classes: Sequence[str] = (),
        transfer_syntaxes: Sequence[str] = (),
    ) -> None:
        self._tempdir = tempfile.TemporaryDirectory(prefix="storescp-")
        workdir = Path(self._tempdir.name)
        acceptance = ["+xa"]  # accept all supported transfer syntaxes (its fixed list)
        if sop_classes or transfer_syntaxes:
            profile = workdir / "acceptor.cfg"
            profile.write_text(acceptor_profile(sop_classes, transfer_syntaxes))
            acceptance = ["-xf", str(profile), "Accept"]
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
            *acceptance,
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
            argv, log_path=self.log_path, env=nodelay_env(tcp_nodelay), cwd=workdir
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
