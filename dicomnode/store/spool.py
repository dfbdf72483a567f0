"""The spool: received instances as files, written so that an acknowledgement is a promise.

A file is written under ``tmp/``, fsync'ed, renamed atomically into ``objects/`` and its
folder fsync'ed. Names are random (never a UID or any other received value), so a hostile
dataset can never choose where its bytes land. Anything left in ``tmp/`` after a crash was
never acknowledged and is removed at start-up.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from dicomnode.errors import SpoolFullError, StorageError
from dicomnode.logs import get_logger

log = get_logger(__name__)

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True, slots=True)
class SpooledFile:
    """A file durably in the spool. ``name`` is relative to the spool's ``objects/``."""

    name: str
    size: int
    sha256: str  # of the dataset part only, to recognise a re-sent instance

    @classmethod
    def of(cls, name: str, header: bytes, dataset: bytes | memoryview) -> SpooledFile:
        """The description of ``header`` + ``dataset`` written under ``name``."""
        return cls(
            name=name, size=len(header) + len(dataset), sha256=hashlib.sha256(dataset).hexdigest()
        )


@dataclass(slots=True)
class PendingFile:
    """A file ``Spool.begin`` wrote to ``tmp/``, which ``sync`` and ``place`` put in place."""

    tmp_path: str
    parent: str  # the folder under objects/ it goes to
    file_name: str
    fd: int = -1  # open until ``place`` closes it
    placed: bool = False  # renamed to ``final_path``

    @property
    def final_path(self) -> str:
        return f"{self.parent}/{self.file_name}"


class Spool:
    """Atomic, fsync'ed files under one root folder.

    On shared storage (a cluster, docs/scaling.md) the root is this node's folder
    ``<shared>/<prefix>``, and names carry the prefix (``<prefix>/ab/<random>.dcm``) so
    that every node finds any node's file from its name in the index; names without one
    are this node's own, as on a single node.
    """

    def __init__(self, root: Path, prefix: str | None = None) -> None:
        self.root = root
        self.prefix = prefix
        self._shared = root.parent
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self._objects = os.fspath(self.objects)
        self._own = "" if prefix is None else f"{prefix}/"
        self._tmp = os.fspath(self.tmp)
        # The 256 folders under objects/ known to exist (made by open(); nothing removes
        # them); a failed write forgets its folder, in case someone did.
        self._parents: set[str] = set()

    def open(self) -> int:
        """Create the folders and remove stale temporary files; returns how many."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._make_fan_out()
        removed = 0
        for stale in self.tmp.iterdir():
            stale.unlink(missing_ok=True)
            removed += 1
        if removed:
            _fsync_dir(self.tmp)
            log.warning("spool_stale_files_removed", count=removed)
        return removed

    def path(self, name: str) -> Path:
        """The absolute path of a spooled file, this node's or (shared) another's."""
        owner, _, rest = name.partition("/")
        if rest.count("/") == 1:  # <prefix>/ab/<random>.dcm
            return self._shared / owner / "objects" / rest
        return self.objects / name

    def owns(self, name: str) -> bool:
        """Whether ``name`` is a file this node wrote (start-up repairs only those)."""
        if self.prefix is None:
            return name.count("/") == 1
        return name.startswith(f"{self.prefix}/")

    def write(self, header: bytes, dataset: bytes | memoryview) -> SpooledFile:
        """Durably write ``header`` + ``dataset`` as one new file.

        Raises SpoolFullError when the disk is full and StorageError for any other
        failure; in both cases nothing is left behind.
        """
        name = self.new_name()
        self.finish(self.begin(name, header, dataset))
        return SpooledFile.of(name, header, dataset)

    def new_name(self) -> str:
        """A fresh random name for ``begin`` (never a received value)."""
        token = os.urandom(16).hex()  # uuid4's randomness, without building a UUID
        if self.prefix is None:
            return f"{token[:2]}/{token}.dcm"
        return f"{self.prefix}/{token[:2]}/{token}.dcm"

    def begin(self, name: str, header: bytes, dataset: bytes | memoryview) -> PendingFile:
        """Write ``header`` + ``dataset`` to a temporary file, not yet synced or in place.

        The quick first step of ``write`` (no fsync): ``sync`` then ``place`` (or
        ``finish``, both) make it durable under ``name``, ``discard`` removes it.
        Raises as ``write``, leaving nothing behind.
        Paths are plain strings here: this runs once per received instance, and
        pathlib's object per step cost ~4 % of the node's Python time.
        """
        folder, _, file_name = name.removeprefix(self._own).partition("/")
        pending = PendingFile(
            f"{self._tmp}/{file_name}.part", f"{self._objects}/{folder}", file_name
        )
        try:
            pending.fd = os.open(pending.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            _write_all(pending.fd, (header, dataset))
        except OSError as exc:
            self._fail(pending, exc)
        return pending

    def finish(self, pending: PendingFile) -> None:
        """Sync the file, rename it into place and sync its folder; raises as ``write``."""
        self.sync(pending)
        self.place(pending)

    def sync(self, pending: PendingFile) -> None:
        """Sync the temporary file's content: the slow step, and one call that runs
        without the GIL, so another thread can run it while this one works on."""
        try:
            os.fsync(pending.fd)
        except OSError as exc:
            self._fail(pending, exc)

    def place(self, pending: PendingFile) -> None:
        """Rename a synced file into place and sync its folder; raises as ``write``."""
        try:
            fd, pending.fd = pending.fd, -1  # closed even if close() fails: never twice
            os.close(fd)
            self._ensure_parent(pending.parent)
            os.rename(pending.tmp_path, pending.final_path)  # noqa: PTH104 - str paths, per instance
            pending.placed = True
            _fsync_dir(pending.parent)
        except OSError as exc:
            self._fail(pending, exc)

    def discard(self, pending: PendingFile) -> None:
        """Remove a file ``begin`` wrote, wherever it got to.

        Quietly: the error being handled is what matters, and a file left behind is
        garbage that start-up removes (from ``tmp/``, or as an orphan of the index).
        """
        if pending.fd >= 0:
            fd, pending.fd = pending.fd, -1
            with suppress(OSError):
                os.close(fd)
        try:
            if pending.placed:
                pending.placed = False
                Path(pending.final_path).unlink(missing_ok=True)
                _fsync_dir(pending.parent)
            else:
                Path(pending.tmp_path).unlink(missing_ok=True)
        except OSError as exc:
            name = f"{Path(pending.parent).name}/{pending.file_name}"
            log.warning("spool_file_not_removed", spool_name=name, error=exc.strerror)

    def _fail(self, pending: PendingFile, exc: OSError) -> NoReturn:
        self.discard(pending)
        self._parents.discard(pending.parent)
        if exc.errno in _NO_SPACE:
            raise SpoolFullError(f"spool is full: {exc.strerror}") from exc
        raise StorageError(f"cannot write to the spool: {exc.strerror}") from exc

    def remove(self, name: str) -> None:
        """Delete a spooled file (one that was never acknowledged, or is superseded)."""
        path = self.path(name)
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def names(self) -> Iterable[str]:
        """Every file this node wrote, by its name in the index."""
        for path in self.objects.glob("*/*.dcm"):
            yield f"{self._own}{path.parent.name}/{path.name}"

    def _make_fan_out(self) -> None:
        """Create the 256 folders files are spread over, now rather than on first use.

        Made lazily, each cost the instance that first needed it a mkdir and an fsync of
        ``objects/`` before its acknowledgement: on a fresh node, most of the first few
        hundred instances (measured: 9 % of the association thread's busy time on a
        300-slice CT).
        """
        created = False
        for number in range(256):
            folder = self.objects / f"{number:02x}"
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                created = True
            self._parents.add(os.fspath(folder))
        if created:
            _fsync_dir(self.objects)

    def _ensure_parent(self, folder: str) -> None:
        if folder in self._parents:
            return
        path = Path(folder)
        if not path.is_dir():
            path.mkdir(exist_ok=True)
            _fsync_dir(self._objects)
        self._parents.add(folder)


def _write_all(fd: int, parts: Iterable[bytes | memoryview]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _fsync_dir(folder: str | Path) -> None:
    """Make a rename or unlink in ``folder`` durable (POSIX needs the folder synced)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
