"""The disk high-water mark: refuse new instances before the disk is full, not after.

A full disk mid-write is handled (0xA700, nothing half-written), but a node that fills
its disk also starves its database and its own results. Above the mark, new instances are
refused with 0xA700 until space returns; the change is logged once each way.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicomnode.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DiskState:
    total_bytes: int
    free_bytes: int
    over_high_water: bool

    @property
    def used_percent(self) -> float:
        return 100.0 * (1 - self.free_bytes / self.total_bytes) if self.total_bytes else 100.0


def over_high_water(
    total_bytes: int, free_bytes: int, high_water_percent: float, min_free_bytes: int
) -> bool:
    """The one rule for "too full", shared by the SCP's guard and the admin's ``/readyz``,
    so that the node never refuses instances while saying it is ready (or the reverse)."""
    used_percent = 100.0 * (1 - free_bytes / total_bytes) if total_bytes else 100.0
    return used_percent >= high_water_percent or free_bytes < min_free_bytes


class DiskGuard:
    """Answers "may we accept more?" for the spool's file system, checked at most every second."""

    def __init__(
        self, path: Path, high_water_percent: float, min_free_bytes: int, every: float = 1.0
    ) -> None:
        self._path = path
        self._high_water = high_water_percent
        self._min_free = min_free_bytes
        self._every = every
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._state: DiskState | None = None

    def state(self) -> DiskState:
        with self._lock:
            now = time.monotonic()
            if self._state is None or now - self._checked_at >= self._every:
                previous = self._state
                self._state = self._measure()
                self._checked_at = now
                if previous is None or previous.over_high_water != self._state.over_high_water:
                    self._report(self._state, first=previous is None)
            return self._state

    def accepting(self) -> bool:
        return not self.state().over_high_water

    def _measure(self) -> DiskState:
        usage = shutil.disk_usage(self._path)
        over = over_high_water(usage.total, usage.free, self._high_water, self._min_free)
        return DiskState(usage.total, usage.free, over)

    def _report(self, state: DiskState, first: bool) -> None:
        if state.over_high_water:
            log.error(
                "disk_high_water_reached",
                used_percent=round(state.used_percent, 1),
                free_bytes=state.free_bytes,
                high_water_percent=self._high_water,
                min_free_bytes=self._min_free,
            )
        elif not first:
            log.info("disk_space_recovered", used_percent=round(state.used_percent, 1))
