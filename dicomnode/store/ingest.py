"""Ingest: turn one received instance into a durable, indexed file, or refuse it.

This is what the C-STORE handler calls. The order is what makes an acknowledgement a
promise: check the dataset, write and fsync the file, rename it into place, commit the
index row; only then return. Whatever fails undoes what was done and raises from the
error tree, which the DICOM layer turns into a status.
"""

from __future__ import annotations

from dicomnode.config import CompletionConfig
from dicomnode.domain import Peer, ReceivedInstance, StoredInstance
from dicomnode.errors import SpoolFullError
from dicomnode.logs import get_logger
from dicomnode.store.completion import Clock, CompletionTracker, utc_now
from dicomnode.store.disk import DiskGuard
from dicomnode.store.filemeta import file_meta_bytes
from dicomnode.store.header import read_header
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool

log = get_logger(__name__)


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
    ) -> None:
        self._spool = spool
        self._index = index
        self._completion = completion
        self._config = config
        self._disk = disk
        self._clock = clock

    def association_opened(self, peer: Peer) -> int:
        """Record a new association; returns its id."""
        return self._index.open_association(peer, self._clock())

    def association_closed(self, association_id: int, released: bool) -> None:
        """A released association starts its series' settle clocks; an abort does not."""
        if released:
            self._completion.association_released(association_id)
        else:
            self._index.close_association(
                association_id, False, self._clock(), self._config.policy_for
            )

    def store(self, instance: ReceivedInstance) -> StoredInstance:
        """Durably store ``instance``. Raises InstanceError or StorageError."""
        if self._disk is not None and not self._disk.accepting():
            raise SpoolFullError("the spool's disk is above its high-water mark")
        header = read_header(instance)
        meta = file_meta_bytes(
            header.sop_class_uid,
            header.sop_instance_uid,
            instance.transfer_syntax_uid,
            instance.peer.calling_ae,
        )
        spooled = self._spool.write(meta, instance.dataset)
        try:
            recorded = self._index.record_instance(
                header, spooled, instance, self._clock(), self._config.policy_for
            )
        except BaseException:
            self._remove_quietly(spooled.name)
            raise
        if recorded.obsolete_file is not None:
            self._remove_quietly(recorded.obsolete_file)
        if recorded.opened:
            self._completion.watch(recorded.series_id, recorded.deadline)
        warning = "; ".join(header.warnings) or None
        log.info(
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

    def _remove_quietly(self, name: str) -> None:
        """A superseded or duplicate file is garbage; failing to delete it loses nothing."""
        try:
            self._spool.remove(name)
        except OSError:
            log.warning("spool_file_not_removed", spool_name=name)
