"""How many dataset bytes the node holds in memory: per instance and for all together.

A C-STORE dataset is gathered in memory until its last fragment arrives (``adapt.direct``)
or read back from pynetdicom's temporary file before it is stored (the stock path). One
peer sending a 4 GiB dataset, or sixteen sending 200 MiB each, would otherwise take the
node's memory; here each instance may hold at most ``node.max_dataset_bytes`` and all
associations together at most ``node.max_buffered_bytes``. A dataset that would pass
either is refused with 0xA700 (out of resources, PS3.4 Annex B.2.3): a temporary
failure, which a sender retries, since the memory may be free by then.
"""

from __future__ import annotations

import threading

from dicomnode.dicom.refusals import Reason


class DatasetBudget:
    """The byte counts behind ``node.max_dataset_bytes`` and ``node.max_buffered_bytes``."""

    def __init__(self, max_dataset_bytes: int, max_buffered_bytes: int) -> None:
        self.max_dataset_bytes = max_dataset_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes reserved now, by every association together."""
        return self._held

    def reserve(self, held: int, more: int) -> Reason | None:
        """Reserve ``more`` bytes for a dataset holding ``held`` already; None, or why not."""
        if held + more > self.max_dataset_bytes:
            return Reason.DATASET_TOO_LARGE
        with self._lock:
            if self._held + more > self.max_buffered_bytes:
                return Reason.MEMORY_LIMIT
            self._held += more
        return None

    def release(self, count: int) -> None:
        if count:
            with self._lock:
                self._held -= count


def refusal_comment(reason: Reason, budget: DatasetBudget) -> str:
    """The error comment (0000,0902) for a dataset the budget refused (LO: 64 characters)."""
    if reason is Reason.DATASET_TOO_LARGE:
        return f"dataset larger than {budget.max_dataset_bytes} bytes"[:64]
    return "node memory for datasets in transfer is full; retry later"
