"""The node's own account of what it did: its JSON log events, with their timestamps.

The node logs one JSON object a line (``logging.format: json``); lines that are not JSON
(a library writing to standard error) are skipped. Timestamps are ISO 8601 in UTC from
the node's clock, the same wall clock as ``time.time()`` here, so they can be set against
the benchmark's own clock and against file modification times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    at: float  # seconds since the epoch
    fields: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def read_events(path: Path) -> list[Event]:
    """Every JSON event in the log so far, in order."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        name, stamp = record.get("event"), record.get("timestamp")
        if isinstance(name, str) and isinstance(stamp, str):
            at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            events.append(Event(name, at, record))
    return events


def named(events: Sequence[Event], name: str) -> list[Event]:
    return [e for e in events if e.name == name]


def wait_for_events(
    path: Path,
    done: Callable[[list[Event]], bool],
    *,
    timeout_s: float,
    what: str,
    failed: Callable[[list[Event]], str | None] = lambda _events: None,
) -> list[Event]:
    """Read the log until ``done(events)``; raise ``TimeoutError`` or ``RuntimeError``.

    ``failed`` returns a reason when the log already shows that ``done`` will never be
    true (a failed job, a failed send), so a broken run ends at once, not at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        events = read_events(path)
        if done(events):
            return events
        reason = failed(events)
        if reason is not None:
            raise RuntimeError(f"{what}: {reason} (log: {path})")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s (log: {path})")
        time.sleep(_POLL_S)
