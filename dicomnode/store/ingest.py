"""Ingest: turn one received instance into a durable, indexed file, or refuse it.

This is what the C-STORE handler calls. The order is what makes an acknowledgement a
promise: check the dataset, write and fsync the file, rename it into place, commit the
index row; only then return. Whatever fails undoes what was done and raises from the
error tree, which the DICOM layer turns into a status.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from dicomnode.config import CompletionConfig, CompletionPolicy
from dicomnode.domain import Peer, ReceivedInstance, StoredInstance
from dicomnode.errors import SpoolFullError, StorageError
from dicomnode.logs import get_logger
from dicomnode.store.completion import Clock, CompletionTracker, utc_now
from dicomnode.store.disk import DiskGuard
from dicomnode.store.filemeta import file_meta_bytes
from dicomnode.store.header import InstanceHeader, read_header
from dicomnode.store.index import Index
from dicomnode.store.inflate import inflated
from dicomnode.store.spool import PendingFile, Spool, SpooledFile
from dicomnode.store.walk import walk

log = get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)  # where structlog's events end up


@dataclass(slots=True)
class _SeriesTally:
    """What one association brought of one series, for the ``series_received`` event."""

    study_uid: str
    series_uid: str
    instances: int = 0
    bytes: int = 0
    warnings: int = 0


class _InPlace:
    """Puts a file in place once its sync is done: ``record_instance``'s last step
    before it commits (it may run more than once: the index retries)."""

    __slots__ = ("_pending", "_spool", "_syncing")

    def __init__(self, spool: Spool, pending: PendingFile, syncing: Future[None]) -> None:
        self._spool = spool
        self._pending = pending
        self._syncing = syncing

    def __call__(self) -> None:
        if not self._pending.placed:
            self._syncing.result()
            self._spool.place(self._pending)

    def undo(self) -> None:
        """Nothing was acknowledged: remove the file, wherever it got to."""
        wait([self._syncing])
        self._spool.discard(self._pending)


class Ingest:
    """Stores received instances and keeps association and completion state."""

    def __init__(
        self,
        spool: Spool,
        index: Index,
        completion: CompletionTracker,
        config: CompletionConfig,
        disk: DiskGuard | None = None,
        clock: Clock = utc_now,
        writers: int = 16,
        max_inflated_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._spool = spool
        self._index = index
        self._completion = completion
        self._config = config
        self._disk = disk
        self._clock = clock
        self._max_inflated_bytes = max_inflated_bytes
        # association id -> series id -> tally. One info event per series and
        # association, not per instance: at ~100 instances a second that event was
        # 4 % of the node's Python time, and it said little a summary does not.
        self._tallies: dict[int, dict[int, _SeriesTally]] = {}
        self._tallies_lock = threading.Lock()
        self._policies: dict[str | None, CompletionPolicy] = {}
        # One file sync at a time per association; ``writers`` bounds the threads.
        self._writers = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="spool")

    def close(self) -> None:
        """Let the file syncs under way finish; after this, ``store`` refuses."""
        self._writers.shutdown(wait=True)

    def _policy_for(self, modality: str | None) -> CompletionPolicy:
        """The configuration's policy for ``modality``, built once (it is asked per instance)."""
        policy = self._policies.get(modality)
        if policy is None:
            policy = self._policies[modality] = self._config.policy_for(modality)
        return policy

    def association_opened(self, peer: Peer) -> int:
        """Record a new association; returns its id."""
        return self._index.open_association(peer, self._clock())

    def association_closed(self, association_id: int, released: bool) -> None:
        """A released association starts its series' settle clocks; an abort does not."""
        self._log_tallies(association_id, released)
        if released:
            self._completion.association_released(association_id)
        else:
            self._index.close_association(association_id, False, self._clock(), self._policy_for)

    def store(self, instance: ReceivedInstance) -> StoredInstance:
        """Durably store ``instance``. Raises InstanceError or StorageError.

        The file is written here and synced on a writer thread while this one reads
        the header and prepares the index row; then, in ``record_instance``'s
        ``before_commit``, this thread renames it into place and syncs its folder, and
        only then does the index commit. So the order that makes an acknowledgement a
        promise is kept, and the file's fsync (the slowest, 0.5-2 ms on this machine)
        overlaps the parsing and the index statements instead of adding to them. The
        file meta takes its UIDs from the request: a dataset that disagrees is refused
        (0xA900) and its file removed.
        """
        if self._disk is not None and not self._disk.accepting():
            raise SpoolFullError("the spool's disk is above its high-water mark")
        dataset = instance.dataset
        meta = file_meta_bytes(
            instance.sop_class_uid.strip(),
            instance.sop_instance_uid.strip(),
            instance.transfer_syntax_uid,
            instance.peer.calling_ae,
        )
        name = self._spool.new_name()
        pending = self._spool.begin(name, meta, dataset)
        in_place = _InPlace(self._spool, pending, self._start_sync(pending))
        try:
            # Refused unless a reader can walk all of it: an acknowledgement says it is
            # readable. This overlaps the file's sync like the rest of the checks.
            readable = inflated(instance, self._max_inflated_bytes)
            walk(readable.dataset, readable.transfer_syntax_uid)
            header = read_header(readable)
            spooled = SpooledFile.of(name, meta, dataset)
            recorded = self._index.record_instance(
                header,
                spooled,
                instance,
                self._clock(),
                self._policy_for,
                before_commit=in_place,
            )
        except BaseException:
            in_place.undo()
            raise
        if recorded.obsolete_file is not None:
            self._remove_quietly(recorded.obsolete_file)
        if recorded.opened:
            self._completion.watch(recorded.series_id, recorded.deadline)
        warning = "; ".join(header.warnings) or None
        if instance.association_id:
            self._tally(instance.association_id, recorded.series_id, header, spooled.size, warning)
        # Per instance at debug; at info only what a series summary would hide. The
        # level is checked first: structlog would build the whole event before the
        # standard library dropped it.
        quiet = bool(instance.association_id) and warning is None
        if not quiet or _stdlib_log.isEnabledFor(logging.DEBUG):
            (log.debug if quiet else log.info)(
                "instance_stored",
                instance_id=recorded.instance_id,
                series_id=recorded.series_id,
                study_uid=header.study_uid,
                series_uid=header.series_uid,
                sop_class_uid=header.sop_class_uid,
                transfer_syntax=instance.transfer_syntax_uid,
                size=spooled.size,
                outcome=recorded.outcome.value,
                peer_ae=instance.peer.calling_ae,
                association_id=instance.association_id,
                warning=warning,
            )
        return StoredInstance(
            instance_id=recorded.instance_id,
            series_id=recorded.series_id,
            outcome=recorded.outcome,
            warning=warning,
        )

    def _start_sync(self, pending: PendingFile) -> Future[None]:
        """Sync the file on a writer thread, while this one reads the header and
        prepares the index row.

        Only the fsync runs there: one call that holds no GIL. Each further step a
        writer took (close, rename, open and sync the folder) had to win the GIL back
        from this thread, ~0.4 ms a step here, and made the acknowledgement wait; this
        thread does them once its own work is done. It also waits until the writer is
        about to sync: otherwise the writer, woken while this thread parses the header,
        would wait for the GIL and start its fsync late (measured: ~0.7 ms of ~4).
        """
        syncing = threading.Event()

        def sync() -> None:
            syncing.set()
            self._spool.sync(pending)

        try:
            future = self._writers.submit(sync)
        except RuntimeError as exc:  # shut down: the node is stopping
            self._spool.discard(pending)
            raise StorageError("the node is stopping") from exc
        syncing.wait()
        return future

    def _tally(
        self,
        association_id: int,
        series_id: int,
        header: InstanceHeader,
        size: int,
        warning: str | None,
    ) -> None:
        with self._tallies_lock:
            series = self._tallies.setdefault(association_id, {})
            tally = series.get(series_id)
            if tally is None:
                tally = series[series_id] = _SeriesTally(header.study_uid, header.series_uid)
        # One association is served by one thread: its tallies need no lock.
        tally.instances += 1
        tally.bytes += size
        tally.warnings += warning is not None

    def _log_tallies(self, association_id: int, released: bool) -> None:
        with self._tallies_lock:
            series = self._tallies.pop(association_id, {})
        for series_id, tally in series.items():
            log.info(
                "series_received",
                association_id=association_id,
                series_id=series_id,
                study_uid=tally.study_uid,
                series_uid=tally.series_uid,
                instances=tally.instances,
                size=tally.bytes,
                warnings=tally.warnings,
                released=released,
            )

    def _remove_quietly(self, name: str) -> None:
        """A superseded or duplicate file is garbage; failing to delete it loses nothing."""
        try:
            self._spool.remove(name)
        except OSError:
            log.warning("spool_file_not_removed", spool_name=name)
