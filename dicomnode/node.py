"""The composition root: builds every part of a node from one validated config.

Nothing else constructs stages or reads configuration; tests build a Node the same way
the CLI does, so what is tested is what runs.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.config import Config
from dicomnode.dicom.scp import StorageSCP
from dicomnode.logs import get_logger
from dicomnode.store.completion import CompletionTracker, utc_now
from dicomnode.store.index import Index
from dicomnode.store.ingest import Ingest
from dicomnode.store.spool import Spool

log = get_logger(__name__)


class Node:
    """A running dicomnode: SCP, spool, index and completion timers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.spool = Spool(config.storage.path / "spool")
        self.index = Index(config.database_url)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.completion = CompletionTracker(self.index, config.completion, self.scheduler)
        self.ingest = Ingest(self.spool, self.index, self.completion, config.completion)
        self.scp = StorageSCP(config.node, config.allows_caller, self.ingest)
        self._stopped = threading.Event()

    def start(self) -> None:
        """Recover from any previous crash, then start listening."""
        self.config.storage.path.mkdir(parents=True, exist_ok=True)
        self.spool.open()
        self.index.open()
        self._reconcile()
        self.index.abort_open_associations(utc_now())
        self.scheduler.start()
        self.completion.resume()
        self.scp.start()
        log.info(
            "node_started",
            ae_title=self.config.node.ae_title,
            port=self.scp.port,
            storage=str(self.config.storage.path),
        )

    def stop(self) -> None:
        """Stop accepting, let in-flight stores finish, stop timers, close the index."""
        self.scp.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.index.close()
        self._stopped.set()
        log.info("node_stopped")

    def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        wake = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("node_stopping", signal=signal.Signals(signum).name)
            wake.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start()
        try:
            wake.wait()
        finally:
            self.stop()

    def _reconcile(self) -> None:
        """Remove spool files the index does not know: written, never acknowledged.

        A crash between the rename and the index commit leaves such a file; the sender
        got no success for it and will send it again.
        """
        known = self.index.spool_names()
        present = set(self.spool.names())
        orphans = present - known
        for name in orphans:
            self.spool.remove(name)
        if orphans:
            log.warning("spool_orphans_removed", count=len(orphans))
        if missing := len(known - present):
            log.error("spool_files_missing", count=missing)
