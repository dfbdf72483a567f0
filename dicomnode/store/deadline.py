"""When a receiving series becomes complete: the earliest of three clocks.

- quiet: nothing arrived for ``quiet_seconds``;
- settle: the association that delivered the last instance was released and nothing
  more arrived for ``settle_seconds`` (a sender that releases is done, but a PACS may
  open the next association right away);
- max_wait: ``max_wait_seconds`` passed since this version's first instance, so a
  trickling sender cannot hold a series open for ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dicomnode.config import CompletionPolicy


@dataclass(frozen=True, slots=True)
class Deadline:
    at: datetime
    reason: str  # quiet | settle | max_wait


def completion_deadline(
    policy: CompletionPolicy,
    version_started_at: datetime,
    last_arrival_at: datetime,
    released_at: datetime | None,
) -> Deadline:
    """The moment the series completes unless something else arrives first."""
    candidates = [
        Deadline(last_arrival_at + timedelta(seconds=policy.quiet_seconds), "quiet"),
        Deadline(version_started_at + timedelta(seconds=policy.max_wait_seconds), "max_wait"),
    ]
    if released_at is not None:
        candidates.append(
            Deadline(released_at + timedelta(seconds=policy.settle_seconds), "settle")
        )
    return min(candidates, key=lambda d: d.at)
