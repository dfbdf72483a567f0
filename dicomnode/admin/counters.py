"""In-process counts of what the database never records: refused instances and
associations, duplicates and replacements.

Everything that is stored is counted from the index at scrape time (see
``metrics.py``); what was refused leaves no row, so it is counted on its way through.
The node wraps its instance sink and caller policy with these decorators; nothing in
the DICOM layer changes. Like every Prometheus counter they start at zero with the
process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from dicomnode.dicom.scp import InstanceSink
from dicomnode.dicom.status import Status
from dicomnode.domain import Peer, ReceivedInstance, StoredInstance
from dicomnode.errors import InstanceError, UIDMismatchError

CallerPolicy = Callable[[str, str, str | None], bool]


class ReceiveCounters:
    """Counts by calling AE title: instance outcomes, refusal statuses, refused callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[tuple[str, str]] = Counter()  # (calling AE, outcome)
        self._refusals: Counter[tuple[str, str]] = Counter()  # (calling AE, status)
        self._rejected_callers: Counter[str] = Counter()
        self._refusals_by_reason: Counter[str] = Counter()  # dicomnode.dicom.refusals.Reason

    def sink(self, inner: InstanceSink) -> InstanceSink:
        """``inner`` (the node's Ingest), counting each store's outcome."""
        return _CountingSink(inner, self)

    def caller_policy(self, inner: CallerPolicy) -> CallerPolicy:
        """``inner`` (the node's allowed callers), counting refused associations."""

        def allows(ae_title: str, host: str, certificate_subject: str | None) -> bool:
            allowed = inner(ae_title, host, certificate_subject)
            if not allowed:
                with self._lock:
                    self._rejected_callers[ae_title] += 1
            return allowed

        return allows

    def refused(self, reason: str) -> None:
        """The SCP's refusal counter (``StorageSCP(count_refusal=...)``): one per refusal."""
        with self._lock:
            self._refusals_by_reason[reason] += 1

    def refusals_by_reason(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refusals_by_reason)

    def outcomes(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._outcomes)

    def refusals(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._refusals)

    def rejected_callers(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected_callers)

    def record(self, calling_ae: str, outcome: str, status: Status | None = None) -> None:
        with self._lock:
            self._outcomes[(calling_ae, outcome)] += 1
            if status is not None:
                self._refusals[(calling_ae, f"0x{int(status):04X}")] += 1


class _CountingSink:
    def __init__(self, inner: InstanceSink, counters: ReceiveCounters) -> None:
        self._inner = inner
        self._counters = counters

    def association_opened(self, peer: Peer) -> int:
        return self._inner.association_opened(peer)

    def association_closed(self, association_id: int, released: bool) -> None:
        self._inner.association_closed(association_id, released)

    def store(self, instance: ReceivedInstance) -> StoredInstance:
        calling_ae = instance.peer.calling_ae
        try:
            stored = self._inner.store(instance)
        except Exception as exc:
            # Re-raised: the SCP turns it into the status counted here.
            self._counters.record(calling_ae, "rejected", _status_of(exc))
            raise
        self._counters.record(calling_ae, stored.outcome.value)
        return stored


def _status_of(exc: Exception) -> Status:
    """The status ``dicomnode.dicom.scp`` answers for an exception from the sink."""
    if isinstance(exc, UIDMismatchError):
        return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, InstanceError):
        return Status.CANNOT_UNDERSTAND
    return Status.OUT_OF_RESOURCES
