"""Debian's HAProxy in front of test nodes, run from the shipped ``examples/haproxy.cfg``.

The example is what administrators copy, so the tests run that file rather than a copy of
their own: `render_config` replaces only the listening address, the ``server`` lines and
the stats socket's path, and refuses an example whose shape it does not recognise (so a
changed example fails loudly instead of being tested half-replaced). HAProxy runs in the
foreground (``-db``) as a `ManagedProcess`, its log (``log stdout``) in a file, and is
stopped by its PID.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from dicomnode.testing.ports import LOOPBACK, free_port, require_loopback, wait_for_port
from dicomnode.testing.process import HarnessError, ManagedProcess, PeerStartError, poll_until

DEBIAN_HAPROXY = Path("/usr/sbin/haproxy")
_STATS_TIMEOUT_S = 5.0
_UNCHECKED = ("", "INI", "UNK")  # check_status before a first result (management.txt 9.1)

_BIND = re.compile(r"^(?P<indent>\s*)bind\s+\S+(?P<rest>.*)$")
_STATS_SOCKET = re.compile(r"^(?P<indent>\s*)stats\s+socket\s+\S+(?P<rest>.*)$")
_SERVER = re.compile(
    r"^(?P<indent>\s*)server\s+(?P<name>\S+)\s+(?P<address>\S+):(?P<port>\d+)"
    r"\s+check\s+port\s+(?P<check_port>\d+)\s*$"
)
_ANY_SERVER = re.compile(r"^\s*server\s")
# Only root may switch user or chroot; elsewhere the tests run HAProxy as themselves.
_PRIVILEGED = re.compile(r"^\s*(user|group|chroot)\s")


class ConfigShapeError(HarnessError):
    """The example configuration is not in the shape `render_config` knows how to adapt."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One node behind HAProxy: its DICOM port and the admin port that answers ``/readyz``."""

    name: str
    port: int
    check_port: int
    host: str = LOOPBACK


def haproxy_binary() -> Path | None:
    """The HAProxy executable: Debian's, else one on ``PATH``; None where none is installed."""
    if DEBIAN_HAPROXY.is_file():
        return DEBIAN_HAPROXY
    found = shutil.which("haproxy")
    return Path(found) if found else None


def _only(pattern: re.Pattern[str], lines: list[str], what: str) -> tuple[int, re.Match[str]]:
    found = [(i, m) for i, line in enumerate(lines) if (m := pattern.match(line)) is not None]
    if len(found) != 1:
        raise ConfigShapeError(f"expected exactly one {what} line, found {len(found)}")
    return found[0]


def _servers(lines: list[str]) -> tuple[int, int, list[re.Match[str]]]:
    """The block of ``server`` lines: first index, end index, each line parsed."""
    at = [i for i, line in enumerate(lines) if _ANY_SERVER.match(line)]
    if not at:
        raise ConfigShapeError("no server line")
    if at != list(range(at[0], at[-1] + 1)):
        raise ConfigShapeError("the server lines must stand together, one block")
    parsed = [m for i in at if (m := _SERVER.match(lines[i])) is not None]
    if len(parsed) != len(at):
        raise ConfigShapeError("each server line must read: server NAME ADDRESS:PORT check port N")
    return at[0], at[-1] + 1, parsed


def render_config(
    template: str,
    *,
    port: int,
    upstreams: Sequence[Upstream],
    stats_socket: Path,
    privileged: bool | None = None,
) -> str:
    """The example with our listening port, our nodes and our stats socket put in.

    Every other line (timeouts, balancing, health check, logging) is kept as shipped.
    `privileged` (default: running as root) keeps ``user``/``group``/``chroot``.
    """
    if not upstreams:
        raise ConfigShapeError("at least one upstream node is needed")
    lines = template.splitlines()
    i, bind = _only(_BIND, lines, "bind")
    lines[i] = f"{bind['indent']}bind {LOOPBACK}:{port}{bind['rest']}"
    i, stats = _only(_STATS_SOCKET, lines, "stats socket")
    lines[i] = f"{stats['indent']}stats socket {stats_socket}{stats['rest']}"
    first, end, servers = _servers(lines)
    indent = servers[0]["indent"]
    lines[first:end] = [
        f"{indent}server {u.name} {require_loopback(u.host)}:{u.port} check port {u.check_port}"
        for u in upstreams
    ]
    if not (os.geteuid() == 0 if privileged is None else privileged):
        lines = [line for line in lines if not _PRIVILEGED.match(line)]
    return "\n".join(lines) + "\n"


def check_config(path: Path, binary: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``haproxy -c -f path``: returncode 0 when HAProxy accepts the file."""
    exe = binary or haproxy_binary()
    if exe is None:
        raise PeerStartError("HAProxy is not installed (apt-get install haproxy)")
    return subprocess.run(
        [str(exe), "-c", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=False,
    )


def stats_command(stats_socket: Path, command: str) -> str:
    """One command on HAProxy's stats socket (management.txt 9.3) and its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_STATS_TIMEOUT_S)
        sock.connect(str(stats_socket))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def read_stats(stats_socket: Path) -> list[dict[str, str]]:
    """``show stat`` on the stats socket, one dict per proxy or server row."""
    text = stats_command(stats_socket, "show stat")
    return list(csv.DictReader(text.removeprefix("# ").splitlines()))


class HAProxy:
    """HAProxy on a free loopback port in front of `upstreams`, from the example `template`."""

    def __init__(
        self,
        template: Path,
        upstreams: Sequence[Upstream],
        *,
        binary: Path | None = None,
        backend: str = "dicomnode",
        start_timeout: float = 15.0,
    ) -> None:
        exe = binary or haproxy_binary()
        if exe is None:
            raise PeerStartError("HAProxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        self.backend = backend
        self._tempdir = tempfile.TemporaryDirectory(prefix="dicomnode-haproxy-")
        workdir = Path(self._tempdir.name)
        self.stats_socket = workdir / "admin.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(
            render_config(
                template.read_text(encoding="utf-8"),
                port=self.port,
                upstreams=upstreams,
                stats_socket=self.stats_socket,
            ),
            encoding="utf-8",
        )
        self._start_timeout = start_timeout
        self.process = ManagedProcess(
            [str(exe), "-db", "-f", str(self.config_path)], log_path=workdir / "haproxy.log"
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> Self:
        """Start HAProxy and wait until it listens on `port` itself."""
        self.process.start()
        try:
            wait_for_port(
                self.port,
                timeout=self._start_timeout,
                alive=lambda: self.process.running,
                pid=self.pid,
            )
        except Exception as exc:
            raise PeerStartError(self.process.describe_failure()) from exc
        return self

    def _servers(self) -> dict[str, dict[str, str]]:
        return {
            row["svname"]: row
            for row in read_stats(self.stats_socket)
            if row["pxname"] == self.backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def server_status(self) -> dict[str, str]:
        """Each server of the backend and its state word: ``UP``, ``DOWN``, ``MAINT``...

        A server starts ``UP`` before its first check; `check_status` says whether a
        check has answered yet.
        """
        return {name: row["status"].split(" ")[0] for name, row in self._servers().items()}

    def check_status(self) -> dict[str, str]:
        """Each server's last health check: ``L7OK`` (HTTP 2xx/3xx), ``L7STS`` (another
        status), ``L4CON`` (connection refused)...; ``INI`` before the first one."""
        return {name: row["check_status"].lstrip("* ") for name, row in self._servers().items()}

    def wait_for_status(self, server: str, status: str, timeout: float = 30.0) -> None:
        """Poll the stats socket until `server` is in `status` (health checks decided)."""
        poll_until(
            lambda: self.server_status().get(server) == status,
            timeout=timeout,
            what=f"HAProxy to mark {server} {status}",
            interval=0.1,
        )

    def command(self, command: str) -> None:
        """A stats socket command that answers nothing when it succeeds (``set ...``)."""
        answer = stats_command(self.stats_socket, command)
        if answer.strip():
            raise HarnessError(f"HAProxy refused {command!r}: {answer.strip()}")

    def set_state(self, server: str, state: Literal["ready", "drain", "maint"]) -> None:
        """``set server``: ``drain`` sends it no new connection, its open ones go on."""
        self.command(f"set server {self.backend}/{server} state {state}")

    def wait_for_first_checks(self, timeout: float = 30.0) -> None:
        """Poll until every server's health has been checked once (none ``INI`` any more)."""
        poll_until(
            lambda: all(c not in _UNCHECKED for c in self.check_status().values()),
            timeout=timeout,
            what="HAProxy's first health check of every server",
            interval=0.1,
        )

    def wait_for_check(self, server: str, check: str, timeout: float = 30.0) -> None:
        """Poll the stats socket until `server`'s last health check ended in `check`."""
        poll_until(
            lambda: self.check_status().get(server) == check,
            timeout=timeout,
            what=f"a health check of {server} to end in {check}",
            interval=0.1,
        )

    def stop(self) -> int | None:
        """SIGTERM by PID (HAProxy's hard stop: it closes every connection at once)."""
        return self.process.stop()

    def log_text(self) -> str:
        return self.process.log_text()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._tempdir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
