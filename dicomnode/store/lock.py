"""One node owns its storage: an exclusive lock on a file in ``storage.path``.

Start-up repairs the spool and the index as if the previous run had crashed (stale and
orphan files removed, open associations aborted, the outbox resumed). Beside a live node
that repair destroys acknowledged instances, so ``serve`` takes this lock before anything
reads, repairs or writes the spool or the index, and a second node on the same storage
stops there, having changed nothing.

``fcntl.flock`` belongs to the open file, not to a path or a process: the kernel drops it
when the holder exits, SIGKILL included, so a crash never leaves a stale lock behind, and
the file itself is never removed (removing it would let two nodes lock two different
files of the same name). The holder writes its process id into the file, for the message
the second node prints. The read-only commands (``series``, ``jobs``, ``rules explain``)
never take it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomnode.errors import StorageError, StorageInUseError

LOCK_FILE_NAME = "dicomnode.lock"

# The holder writes its pid just after it locks; a second process that looks in between
# waits this long for it before naming the holder "unknown".
_PID_WAIT_S = 1.0
_PID_POLL_S = 0.02


class StorageLock:
    """The exclusive, non-blocking lock on one storage folder."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.path = storage / LOCK_FILE_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StorageInUseError naming the process that holds it.

        Raises StorageError when the folder or the lock file cannot be created.
        """
        if self._fd is not None:
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = self._read_holder()
                raise StorageInUseError(self.in_use_message(pid), pid) from exc
            raise self._failed("lock", exc) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise self._failed("write", exc) from exc
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file drops it); the file stays, emptied."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The pid left behind would only mislead a reader; the lock itself goes with close.
        with suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def holder(self) -> int | None:
        """The process holding the lock now, or None when it is free (0: held, pid unknown).

        For ``config check``, which reports whether ``serve`` could start: it creates
        nothing and writes nothing, and holds a shared lock only for the instant of
        the test (a shared lock conflicts with the holder's exclusive one).
        """
        if self._fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failed("open", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise self._failed("lock", exc) from exc
            return self._read_holder() or 0
        finally:
            os.close(fd)  # drops the shared lock, if taken
        return None

    def in_use_message(self, pid: int | None) -> str:
        who = f"process {pid}" if pid else "another process (its id is not recorded)"
        return f"storage {self.storage} is in use by {who}"

    def _open(self) -> int:
        try:
            self.storage.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise self._failed("open", exc) from exc

    def _failed(self, verb: str, exc: OSError) -> StorageError:
        return StorageError(f"storage {self.storage}: cannot {verb} {self.path}: {exc}")

    def _read_holder(self) -> int | None:
        deadline = time.monotonic() + _PID_WAIT_S
        while True:
            try:
                text = self.path.read_text(encoding="ascii", errors="replace").strip()
            except OSError:
                text = ""
            if text.isdigit():
                return int(text)
            if time.monotonic() >= deadline:
                return None
            time.sleep(_PID_POLL_S)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
