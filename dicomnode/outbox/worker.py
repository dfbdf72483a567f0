"""Outbox workers: one thread per destination, so a dead destination delays no other.

Each worker takes the destination's due sends one at a time, sends the unsent instances
(as stored, streamed from the spool; by C-STORE, or by STOW-RS to a DICOMweb service),
records every acknowledgement in batches while it goes, and lets the queue decide what
happens next (done, retry later, failed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from dicomnode.config import Destination, DicomwebDestination
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.commitment import CommitmentReport, new_transaction_uid, request_commitment
from dicomnode.dicom.dicomweb import send_files_stow, web_settings
from dicomnode.dicom.scu import (
    FileResult,
    ProgressCallback,
    ScuSettings,
    SendableFile,
    TlsSettings,
    send_files,
)
from dicomnode.dicom.tls import ReloadingContext
from dicomnode.errors import PeerError
from dicomnode.logs import get_logger
from dicomnode.outbox.queue import Finish, ItemResult, OutboxQueue, SendWork
from dicomnode.store.spool import Spool

log = get_logger(__name__)

Clock = Callable[[], datetime]
_FLUSH_EVERY_ITEMS = 50
_FLUSH_EVERY_SECONDS = 2.0
_IDLE_POLL_SECONDS = 5.0  # also how soon a retry made from the CLI is seen


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Stopping(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from the progress callback to end a send when the node stops."""


class Outbox:
    """Starts, wakes and stops the destination workers."""

    def __init__(
        self,
        queue: OutboxQueue,
        spool: Spool,
        destinations: Mapping[str, Destination | DicomwebDestination],
        calling_ae: str,
        clock: Clock = _utc_now,
    ) -> None:
        self.queue = queue
        self._workers = {
            name: _DestinationWorker(name, dest, queue, spool, calling_ae, clock)
            for name, dest in destinations.items()
        }
        for worker in self._workers.values():
            worker.on_report = self.commitment_report

    def start(self) -> None:
        resumed = self.queue.resume_interrupted()
        if resumed:
            log.info("sends_resumed", count=resumed)
        for worker in self._workers.values():
            worker.start()

    def commitment_report(self, report: CommitmentReport) -> None:
        """A destination's storage commitment report (from the SCP, or the request's own
        association): the send it answers is committed, or failed naming the instances."""
        summary = self.queue.record_commitment(report.transaction_uid, report.failed)
        if summary is None:
            log.warning("commitment_report_unmatched", transaction_uid=report.transaction_uid)
            return
        log.info(
            "send_committed" if summary.commitment == "committed" else "send_commitment_failed",
            send_id=summary.id,
            destination=summary.destination,
            committed=len(report.committed),
            failed=len(report.failed),
            reason=summary.reason,
        )

    def reload_tls(self) -> bool:
        """Load each TLS destination's certificate, key and trust files again (SIGHUP);
        False if any did not load (that destination keeps its previous ones)."""
        results = [w.tls.reload() for w in self._workers.values() if w.tls is not None]
        return all(results)

    def wake(self, destination: str | None = None) -> None:
        """New or retried sends are waiting: look now rather than at the next poll."""
        for name, worker in self._workers.items():
            if destination is None or name == destination:
                worker.wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        for worker in self._workers.values():
            worker.stopping.set()
            worker.wake.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))


class _DestinationWorker(threading.Thread):
    def __init__(
        self,
        name: str,
        destination: Destination | DicomwebDestination,
        queue: OutboxQueue,
        spool: Spool,
        calling_ae: str,
        clock: Clock,
    ) -> None:
        super().__init__(name=f"outbox-{name}", daemon=True)
        self.destination_name = name
        self.destination = destination
        self.tls: ReloadingContext | None = None
        # The one thing that differs by kind: how a send's files go (C-STORE or STOW-RS).
        self._transport: Callable[[list[SendableFile], ProgressCallback], object]
        # Set by _dimse for a destination with storage_commitment: sends the N-ACTION.
        self._commitment: Callable[[str, list[tuple[str, str]]], None] | None = None
        if isinstance(destination, DicomwebDestination):
            web = web_settings(name, destination)  # its credentials, read once at start
            self.label = destination.url
            self._transport = lambda files, report: send_files_stow(files, web, report)
        else:
            self.label, self._transport = self._dimse(name, destination, calling_ae)
        self.on_report: Callable[[CommitmentReport], None] = lambda _report: None
        self.queue = queue
        self.spool = spool
        self.clock = clock
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def _dimse(
        self, name: str, destination: Destination, calling_ae: str
    ) -> tuple[str, Callable[[list[SendableFile], ProgressCallback], object]]:
        address = DicomAddress(destination.ae_title, destination.host, destination.port)
        tls: TlsSettings | None = None
        if destination.tls is not None:
            # Files that change are picked up by the next association (``current``).
            self.tls = ReloadingContext.for_destination(name, destination.tls)
            source = f"destinations.{name}.tls"
            tls = TlsSettings(self.tls.current, destination.tls.server_name, source)
        settings = ScuSettings(
            calling_ae=destination.calling_ae or calling_ae,
            connect_timeout_seconds=destination.connect_timeout_seconds,
            network_timeout_seconds=destination.network_timeout_seconds,
            tls=tls,
        )
        if destination.storage_commitment:
            self._commitment = lambda uid, refs: request_commitment(
                address, settings, uid, refs, self.on_report
            )
        return str(address), lambda files, report: send_files(files, address, settings, report)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self._step()
            except Exception:
                # The root of this thread: log, pause, carry on; never die silently.
                log.exception("outbox_worker_failed", destination=self.destination_name)
                busy = False
                self.stopping.wait(5.0)
            if not busy:
                self.wake.wait(self._idle_seconds())
                self.wake.clear()

    def _idle_seconds(self) -> float:
        due = self.queue.next_due_at(self.destination_name)
        if self._commitment is not None:
            answer_by = self.queue.next_commitment_due(self.destination_name)
            if answer_by is not None:
                due = answer_by if due is None else min(due, answer_by)
        if due is None:
            return _IDLE_POLL_SECONDS
        return min(_IDLE_POLL_SECONDS, max(0.05, (due - self.clock()).total_seconds()))

    def _step(self) -> bool:
        if self._commitment is not None:
            for expired in self.queue.expire_commitments(self.destination_name, self.clock()):
                log.warning(
                    "send_commitment_timed_out",
                    send_id=expired.id,
                    destination=self.destination_name,
                )
        work = self.queue.claim_next(self.destination_name, self.clock())
        if work is None:
            return False
        self._send(work)
        return True

    def _send(self, work: SendWork) -> None:
        started = self.clock()
        by_path = {self.spool.path(item.spool_name): item for item in work.items}
        files = [
            SendableFile(path, i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid, i.size)
            for path, i in by_path.items()
        ]
        pending: list[ItemResult] = []
        last_flush = time.monotonic()
        last_status: int | None = None
        sent = 0
        refusal: str | None = None  # the first instance refused for good: why
        unsent: str | None = None  # the first instance to try again: why (the cause)

        def on_result(result: FileResult, _size: int) -> None:
            nonlocal last_flush, last_status, sent, refusal, unsent
            sent += result.ok
            item = by_path[result.path]
            if result.status is not None:
                last_status = result.status
            state = "sent" if result.ok else "failed" if result.permanent else "pending"
            pending.append(ItemResult(item.item_id, state, result.status))
            if state == "pending":
                unsent = unsent or result.note
            if state == "failed":
                refusal = refusal or result.note
                log.warning(
                    "instance_send_refused",
                    send_id=work.send_id,
                    destination=self.destination_name,
                    sop_instance_uid=item.sop_instance_uid,
                    note=result.note,
                )
            if (
                len(pending) >= _FLUSH_EVERY_ITEMS
                or time.monotonic() - last_flush > _FLUSH_EVERY_SECONDS
            ):
                self.queue.record_items(work.send_id, pending)
                pending.clear()
                last_flush = time.monotonic()
            if self.stopping.is_set():
                raise _Stopping

        failure: str | None = None
        permanent = False
        try:
            self._transport(files, on_result)
        except PeerError as exc:
            failure, permanent = str(exc), exc.permanent
        except _Stopping:
            failure = "interrupted: the node is stopping"
        except Exception as exc:
            # The root of one send: whatever it raised is this send's failure, retried with
            # backoff; it never leaves the send "sending" nor stops the destination's others.
            log.exception("send_raised", send_id=work.send_id, destination=self.destination_name)
            failure = f"{type(exc).__name__}: {exc}"
        if failure is None and unsent is not None:
            failure = f"{self.label}: {unsent}"
        finish = Finish(failure=failure, permanent=permanent, sent=sent, refusal=refusal)
        self.queue.record_items(work.send_id, pending)
        summary = self.queue.finish(
            work.send_id, started, self.clock(), finish, self.destination.retry, last_status
        )
        event = {
            "done": "send_delivered",
            "failed": "send_failed",
            "pending": "send_retry_scheduled",
        }.get(summary.state, "send_attempted")
        log.info(
            event,
            send_id=summary.id,
            destination=self.destination_name,
            origin=summary.origin,  # rule:<name> (a forward) or job:<id> (a pipeline's result)
            series_id=summary.series_id,
            attempt=work.attempt,
            sent=summary.sent_count,
            instance_count=summary.instance_count,
            reason=summary.reason,
            next_attempt_at=summary.next_attempt_at.isoformat()
            if summary.state == "pending"
            else None,
            seconds=round((self.clock() - started).total_seconds(), 3),
        )
        if summary.state == "done" and self._commitment is not None:
            self._request_commitment(summary.id)

    def _request_commitment(self, send_id: int) -> None:
        """Ask the destination to commit to the send's instances (recorded first)."""
        assert isinstance(self.destination, Destination) and self._commitment is not None
        uid = new_transaction_uid()
        due = self.clock() + timedelta(seconds=self.destination.commitment_timeout_seconds)
        references = self.queue.begin_commitment(send_id, uid, due)
        try:
            self._commitment(uid, references)
        except Exception as exc:  # noqa: BLE001 - the root of this request
            # A PeerError or whatever else: the send stays delivered, unproven, and says why.
            why = str(exc) if isinstance(exc, PeerError) else f"{type(exc).__name__}: {exc}"
            self.queue.commitment_unrequested(send_id, why)
            log.warning(
                "send_commitment_unrequested",
                send_id=send_id,
                destination=self.destination_name,
                reason=why,
            )
            return
        log.info(
            "send_commitment_requested",
            send_id=send_id,
            destination=self.destination_name,
            instance_count=len(references),
        )
