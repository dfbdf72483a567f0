"""A subprocess that the test harness owns, and ends by its PID only.

Every peer the harness starts (Orthanc, storescp, storescu) is one of these, so that a
failing test cannot leave a listener behind: `stop` runs from each context manager's
``__exit__`` and, as a last resort, from an ``atexit`` hook. Nothing here ever signals a
process it did not start (no ``pkill``, no process groups).

The harness raises its own small tree, kept apart from ``dicomnode.errors`` on purpose:
these are faults of the test rig, never of the product::

    HarnessError               a peer the tests rely on misbehaved
     +-- PeerStartError        a peer exited or stayed deaf while starting
     +-- HarnessTimeoutError   a condition did not become true in time (a TimeoutError too)
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

_POLL_INTERVAL_S = 0.02
_LOG_TAIL_CHARS = 4000


class HarnessError(RuntimeError):
    """A peer the tests rely on misbehaved."""


class PeerStartError(HarnessError):
    """A peer exited, or never answered, while starting."""


class HarnessTimeoutError(HarnessError, TimeoutError):
    """A polled condition did not become true before its deadline."""


def poll_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = _POLL_INTERVAL_S,
) -> None:
    """Return as soon as `condition()` is true; raise `HarnessTimeoutError` at the deadline.

    Polling keeps tests as fast as the peer allows, where a fixed sleep is either too
    long (slow suite) or too short (flaky suite).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise HarnessTimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


_RUNNING: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    # Only reached when a caller forgot a context manager; still by PID, never by name.
    for proc in list(_RUNNING):
        proc.stop(timeout=2.0)


class ManagedProcess:
    """One child process with its output in a log file; stopped by PID, TERM then KILL."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise HarnessError(f"{self.argv[0]} was never started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def start(self) -> Self:
        if self._popen is not None:
            raise HarnessError(f"{self.argv[0]} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
            )
        except BaseException:
            self._log.close()
            raise
        _RUNNING.add(self)
        return self

    def wait(self, timeout: float) -> int:
        """Wait for a natural exit; raise `HarnessTimeoutError` (and leave it running) if late."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            late = f"{self.argv[0]} still running after {timeout:.1f} s"
            raise HarnessTimeoutError(late) from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        """End the process by its PID: SIGTERM, wait up to `timeout`, then SIGKILL."""
        proc = self._popen
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return proc.returncode
        finally:
            _RUNNING.discard(self)
            if self._log is not None:
                self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe_failure(self) -> str:
        """The exit status and the end of the log, for error messages."""
        state = "running" if self.running else f"exited with {self.returncode}"
        tail = self.log_text()[-_LOG_TAIL_CHARS:]
        return f"{' '.join(self.argv)} ({state}); log {self.log_path}:\n{tail}"

    def __enter__(self) -> Self:
        return self if self._popen is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
