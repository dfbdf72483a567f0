"""Liveness and readiness: can the node take studies right now?

Ready means the DICOM listener accepts connections, the index answers and the spool's
file system is below its high-water mark. Each check returns a reason when it fails, so
``/readyz`` says what is wrong rather than only that something is.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dicomnode.store.database import Database
from dicomnode.store.disk import over_high_water

_WILDCARDS = {"", "0.0.0.0", "::"}  # addresses meaning "every interface"


@dataclass(frozen=True, slots=True)
class DiskUsage:
    total_bytes: int
    free_bytes: int
    above_high_water: bool  # too full: new instances are refused, the node is not ready


@dataclass(frozen=True, slots=True)
class DiskWatermark:
    """The spool file system's high-water mark: a used percentage, or a minimum of free bytes.

    Either limit being crossed counts; ``min_free_bytes=0`` disables that one. The rule is
    the SCP's own (``store.disk.over_high_water``); this reads it without the SCP's cache.
    """

    path: Path
    high_water_percent: float = 90.0
    min_free_bytes: int = 0

    def usage(self) -> DiskUsage:
        """The file system holding ``path`` (its nearest existing parent before start-up)."""
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        stats = shutil.disk_usage(probe)
        high = over_high_water(
            stats.total, stats.free, self.high_water_percent, self.min_free_bytes
        )
        return DiskUsage(stats.total, stats.free, high)


def tcp_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``.

    Used for the SCP: a connection that closes before sending A-ASSOCIATE-RQ costs the
    listener nothing and is not an association, so it is neither indexed nor logged.
    """
    target = "127.0.0.1" if host in _WILDCARDS else host
    try:
        with socket.create_connection((target, port), timeout=timeout):
            return True
    except OSError:
        return False


def database_problem(database: Database) -> str | None:
    """None when the index answers a trivial query; otherwise why not."""
    try:
        with database.reading() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"database unreachable: {type(exc).__name__}"
    return None
