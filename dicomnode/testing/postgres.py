"""A throw-away PostgreSQL cluster for tests: Debian's binaries, a temporary folder, loopback.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root the cluster belongs to the
``postgres`` user that Debian's package creates (run through ``runuser``); as anyone else
it belongs to the caller. It listens on 127.0.0.1 only, on a free port, with its Unix
socket inside the temporary folder, and trusts every local connection: nothing but the
tests can reach it, and it is deleted when they end. ``fsync`` is off: a crash of the
test machine loses nothing anyone keeps.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomnode.testing.ports import LOOPBACK, free_port
from dicomnode.testing.process import HarnessError, PeerStartError, poll_until

DEBIAN_ROOT = Path("/usr/lib/postgresql")
DRIVERS = ("psycopg", "psycopg2")
_SERVICE_USER = "postgres"
_COMMAND_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


def find_bindir(root: Path = DEBIAN_ROOT) -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL Debian installed, or None."""
    found = [p.parent for p in root.glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


class PostgresCluster:
    """``initdb`` + ``pg_ctl start`` in a temporary folder; ``stop`` removes it all.

    ``stop_server`` and ``start_server`` stop and start the server alone, its data kept.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PeerStartError(f"no PostgreSQL under {DEBIAN_ROOT} (apt-get install postgresql)")
        self.bindir = found
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self._folder: Path | None = None
        self._pid: int | None = None
        self._databases = 0

    @property
    def folder(self) -> Path:
        if self._folder is None:
            raise HarnessError("the cluster was never started")
        return self._folder

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self._pid

    def start(self) -> Self:
        folder = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
        self._folder = folder
        if self._as_root:
            user = pwd.getpwnam(_SERVICE_USER)
            os.chown(folder, user.pw_uid, user.pw_gid)
        data = folder / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        atexit.register(self.stop)
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the server on the cluster's port and data (again, after `stop_server`)."""
        folder = self.folder
        data = folder / "data"
        options = f"-c listen_addresses={LOOPBACK} -p {self.port} -k {folder} -F"
        log_file = str(folder / "server.log")
        self._run("pg_ctl", "-D", str(data), "-l", log_file, "-o", options, "-w", "start")
        # pg_ctl -w returns once the server accepts connections, its PID file written.
        self._pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop_server(self) -> None:
        """Stop the server and keep its data (``pg_ctl stop -m fast``): an outage that
        ends every connection, for tests of what a node does meanwhile."""
        pid, self._pid = self._pid, None
        if pid is not None:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def create_database(self) -> str:
        """A new, empty database (CREATE DATABASE copies a template: ~0.1 s); its name."""
        self._databases += 1
        name = f"test_{self._databases}"
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, ending any connection a test left open (PostgreSQL 13+)."""
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of ``database`` through ``driver`` (one of ``DRIVERS``)."""
        return f"postgresql+{driver}://postgres@{LOOPBACK}:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg  # a test extra: only tests on PostgreSQL import it

        dsn = f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(statement.encode())

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; then the postmaster is ended by its PID if it lingers."""
        atexit.unregister(self.stop)
        folder = self._folder
        if folder is None:
            return
        pid, self._pid = self._pid, None
        try:
            if pid is not None:
                self._run("pg_ctl", "-D", str(folder / "data"), "-m", "fast", "-w", "stop")
        except (HarnessError, subprocess.TimeoutExpired):
            pass  # the PID check below ends it
        finally:
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
                poll_until(lambda: not _alive(pid), timeout=_STOP_TIMEOUT_S, what="postmaster")
            self._folder = None
            shutil.rmtree(folder, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-chars:]
        except (OSError, HarnessError):
            return ""

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", _SERVICE_USER, "--", *command]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            cwd=self._folder,
            check=False,
        )
        if done.returncode != 0:
            raise PeerStartError(
                f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
                f"\n{self.log_tail()}"
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended: its parent, pg_ctl's, is gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
