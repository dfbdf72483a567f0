"""What a DCMTK storescp received, and when: the files in its folder and their mtimes.

storescp writes each file before it sends the C-STORE response, so the last file's
modification time is, within a millisecond or so, the moment the last instance was
acknowledged. It names files ``<prefix>.<SOP instance UID>``, the prefix standing for
the SOP class (DCMTK 3.6.7: ``CT`` for CT Image, ``SG`` for Segmentation, ``SR3`` for
Comprehensive 3D SR), which tells results apart without parsing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Arrivals:
    count: int
    last_at: float  # the newest file's mtime, seconds since the epoch; 0 when none


def kind_of(name: str) -> str:
    """``SG.1.2.3`` -> ``SEG``, ``SR3.1.2.3`` -> ``SR``, ``CT.1.2.3`` -> ``CT``."""
    prefix = name.split(".", 1)[0]
    if prefix == "SG":
        return "SEG"
    return "SR" if prefix.startswith("SR") else prefix


def look(folder: Path, accept: Callable[[str], bool] = lambda _name: True) -> Arrivals:
    stamps = [p.stat().st_mtime for p in folder.iterdir() if p.is_file() and accept(p.name)]
    return Arrivals(len(stamps), max(stamps, default=0.0))


def wait_for_files(
    folder: Path,
    count: int,
    *,
    timeout_s: float,
    accept: Callable[[str], bool] = lambda _name: True,
) -> Arrivals:
    """Poll until ``count`` accepted files are there (or the deadline: then what there is)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = look(folder, accept)
        if seen.count >= count or time.monotonic() >= deadline:
            return seen
        time.sleep(_POLL_S)
