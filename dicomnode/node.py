"""The composition root: builds every part of a node from one validated config.

Nothing else constructs stages or reads configuration; tests build a Node the same way
the CLI does, so what is tested is what runs.
"""

from __future__ import annotations

import faulthandler
import signal
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.admin import (
    AdminAccess,
    AdminHTTPS,
    AdminServer,
    AdminServices,
    DiskWatermark,
    ReceiveCounters,
    admin_access,
    create_app,
)
from dicomnode.config import Config, DicomwebDestination
from dicomnode.dicom import dicomweb, tls
from dicomnode.dicom.scp import StorageSCP
from dicomnode.errors import ConfigError
from dicomnode.logs import get_logger
from dicomnode.outbox.queue import OutboxQueue
from dicomnode.outbox.worker import Outbox
from dicomnode.pipeline.definition import PipelineDefinition, all_definitions, check_step_files
from dicomnode.pipeline.engine import PipelineEngine
from dicomnode.pipeline.findings import pipeline_findings
from dicomnode.pipeline.worker import PipelineWorkers
from dicomnode.routing.live_rules import LiveRules
from dicomnode.routing.router import Router
from dicomnode.rules import RuleSet, load_rules
from dicomnode.runners import ModelHost
from dicomnode.store.claims import Lease
from dicomnode.store.completion import CompletionTracker, utc_now
from dicomnode.store.database import Database
from dicomnode.store.disk import DiskGuard
from dicomnode.store.index import Index
from dicomnode.store.ingest import Ingest
from dicomnode.store.lock import StorageLock
from dicomnode.store.nodes import Membership
from dicomnode.store.notify import JOB, ROUTE, SEND_PREFIX, Listener
from dicomnode.store.retention import Retention
from dicomnode.store.spool import Spool

log = get_logger(__name__)

RULES_RELOAD_SECONDS = 2.0
# How often a node looks for series past their deadline whose timer died with a node.
COMPLETION_SWEEP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """What ``check_config`` found valid, for the node to be built from."""

    models: Mapping[str, Any]
    pipelines: Mapping[str, PipelineDefinition]
    admin_access: AdminAccess | None  # None: the admin API is disabled
    rules: RuleSet  # as they would come into force now; empty without a rules folder


def check_config(config: Config, source: str = "configuration") -> CheckedConfig:
    """Every check ``serve`` runs before it touches the storage or binds a port.

    ``dicomnode config check`` runs this same function, so a configuration it passes is
    one ``serve`` accepts, with the same message when it is not. Reads no storage and
    loads no model (``config check`` then loads them all, ``serve`` those in use).
    Raises ConfigError (RulesError is one) naming the file and key.
    """
    access = _admin_access(config) if config.admin.enabled else None
    _check_tls(config, source)
    models, pipelines = all_definitions(config.models, config.pipelines, source)
    check_step_files(pipelines, config.base_dir, source)
    rules = RuleSet((), version="none")
    if config.rules_dir.exists():
        rules = load_rules(
            config.rules_dir,
            destinations=tuple(config.destinations),
            pipelines=pipeline_findings(pipelines),
        )
    return CheckedConfig(models, pipelines, access, rules)


def _check_tls(config: Config, source: str) -> None:
    """Load every DICOM-TLS certificate, key and trust file once, as the node would, and
    every DICOMweb destination's credential files (refused when others may read them)."""
    try:
        if config.node.tls is not None:
            key = "node.tls"
            tls.server_context(config.node.tls)
        for name, destination in config.destinations.items():
            if isinstance(destination, DicomwebDestination):
                dicomweb.check_credentials(name, destination)
            elif destination.tls is not None:
                key = f"destinations.{name}.tls"
                tls.client_context(destination.tls)
    except tls.TLSConfigError as exc:
        raise ConfigError(f"{source}: {key}: {exc}") from exc


def _admin_access(config: Config) -> AdminAccess:
    """The admin API's tokens (files only their owner may read) and limits, its HTTPS
    files loaded once; refuses an open API on an address other machines can reach."""
    if config.admin.tls is not None:
        AdminHTTPS(config.admin.tls)
    return admin_access(config.admin)


class Node:
    """A running dicomnode: SCP, spool, index, completion, routing, pipelines, outbox."""

    def __init__(self, config: Config) -> None:
        self.config = config
        checked = check_config(config)
        _make_storage_folder(config.storage.path)  # before anything would open in it
        self.roles = frozenset(config.node.roles)
        self.storage_lock = StorageLock(config.lock_folder)
        self.database = Database(config.database_url)
        self.spool = Spool(config.spool_path, config.spool_prefix)
        self.lease = Lease(config.node_id, config.node.lease_seconds)
        self.membership = Membership(self.database, self.lease, config.node.roles, utc_now)
        self.index = Index(self.database, config.node_id)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.completion = CompletionTracker(self.index, config.completion, self.scheduler)
        # The disk that fills is the one the objects go to: the shared one in a cluster.
        self.disk = DiskGuard(
            config.spool_path,
            config.storage.high_water_percent,
            config.storage.min_free_bytes,
        )
        self.ingest = Ingest(
            self.spool,
            self.index,
            self.completion,
            config.completion,
            disk=self.disk,
            writers=config.node.max_associations,  # one file being synced per association
            max_inflated_bytes=config.node.max_inflated_bytes,
        )
        self.counters = ReceiveCounters()
        # What SIGHUP calls (``reload_tls``): each part's certificate reload.
        self.tls_reloaders: list[Callable[[], bool]] = []
        self.scp = StorageSCP(
            config.node,
            self.counters.caller_policy(config.allows_caller),
            self.counters.sink(self.ingest),
            self.counters.refused,
            # The outbox is made below; a report comes only once both run.
            commitment_reports=(
                (lambda report: self.outbox.commitment_report(report))
                if any(
                    getattr(d, "storage_commitment", False) for d in config.destinations.values()
                )
                else None
            ),
        )
        self.tls_reloaders.append(self.scp.reload_tls)
        self.pipelines = dict(checked.pipelines)
        self.models = ModelHost(checked.models, config.base_dir)
        self.rules = LiveRules(
            config.rules_dir,
            self.database,
            tuple(config.destinations),
            pipeline_findings(self.pipelines),
            utc_now,
        )
        self.outbox = Outbox(
            OutboxQueue(self.database, self.lease),
            self.spool,
            config.destinations,
            config.node.ae_title,
        )
        self.tls_reloaders.append(self.outbox.reload_tls)
        self.router = Router(
            self.database,
            self.index,
            self.spool,
            self.rules,
            self._sends_queued,
            self._jobs_queued,
            utc_now,
            lease=self.lease,
            shadow_pipelines=[name for name, p in self.pipelines.items() if p.shadow],
        )
        self.completion.subscribe(self.router.notify)
        self.retention = Retention(
            self.database,
            self.spool,
            timedelta(hours=config.storage.retention_hours),
            utc_now,
            index_retention=(
                None
                if config.storage.index_retention_days is None
                else timedelta(days=config.storage.index_retention_days)
            ),
        )
        self.engine = PipelineEngine(
            self.pipelines, self.models, config.pipeline_limits, config.base_dir
        )
        self.workers = PipelineWorkers(
            self.database,
            self.index,
            self.spool,
            self.engine,
            config.node.ae_title,
            self._sends_queued,
            utc_now,
            count=config.pipeline_workers,
            lease=self.lease,
        )
        self.admin = (
            self._admin_server(checked.admin_access) if checked.admin_access is not None else None
        )
        engine = self.database.engine
        self.listener = Listener(engine, self._on_notice) if Listener.wanted(engine) else None

    def start(self) -> None:
        """Recover from any previous crash, then start every stage, the listener last.

        The storage lock comes first: recovery beside another live node on the same
        storage would remove the files it is writing and abort its associations.
        """
        self.storage_lock.acquire()  # in the folder __init__ made (_make_storage_folder)
        self.spool.open()
        self.index.open()
        self.membership.join()
        self.rules.load_initial()
        self._reconcile()
        self.index.abort_open_associations(utc_now())
        if "pipeline" in self.roles:
            self._load_models_in_use()
        if "send" in self.roles:
            self.outbox.start()
        if "pipeline" in self.roles:
            self.workers.start()
        if "route" in self.roles:
            self.router.start()
        if self.listener is not None:
            self.listener.start()
        self.scheduler.start()
        self._every(self.membership.beat_seconds, self.membership.beat, "heartbeat")
        self._every(RULES_RELOAD_SECONDS, self.rules.refresh, "rules-reload")
        self._every(
            self.config.storage.retention_check_seconds, self.retention.housekeeping, "retention"
        )
        if self.roles & {"receive", "route"}:
            self._every(COMPLETION_SWEEP_SECONDS, self.completion.sweep, "completion-sweep")
        self.completion.resume()
        if "receive" in self.roles:
            self.scp.start()
        if self.admin is not None:
            self.admin.start()
        log.info(
            "node_started",
            node_id=self.lease.owner,
            roles=sorted(self.roles),
            ae_title=self.config.node.ae_title,
            port=self.scp.port,
            tls_port=self.scp.tls_port,
            storage=str(self.config.storage.path),
            rules_version=self.rules.current.version,
            destinations=sorted(self.config.destinations),
        )

    def _every(self, seconds: float, task: Callable[[], object], name: str) -> None:
        self.scheduler.add_job(
            task, "interval", seconds=seconds, id=name, coalesce=True, max_instances=1
        )

    def stop(self) -> None:
        """Stop accepting, let in-flight stores finish, stop the stages, close the index."""
        if self.admin is not None:
            self.admin.stop()
        self.scp.stop()
        self.ingest.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.listener is not None:
            self.listener.stop()
        self.router.stop()
        self.workers.stop()
        self.outbox.stop()
        self.models.close()
        try:
            self.membership.leave()
        except Exception:  # the database may be what failed; stopping goes on
            log.warning("node_leave_not_recorded", exc_info=True)
        self.database.close()
        self.storage_lock.release()
        log.info("node_stopped")

    def reload_tls(self) -> bool:
        """Load every TLS certificate, key and trust file again (SIGHUP).

        Each part keeps its previous context where its new files do not load (logged as
        ``tls_reload_failed``); False if any did not. Changed files are also picked up by
        the next connection without this.
        """
        results = [reload() for reload in self.tls_reloaders]
        return all(results)

    def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly; SIGHUP reloads certificates.

        The handlers do nothing in Python: each signal's number reaches the main loop
        through ``signal.set_wakeup_fd``. A handler that set a ``threading.Event`` could
        run while this thread held that event's lock (entering ``wait``) and hang the node
        for good, deaf to SIGTERM too.
        """
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, _note_signal) for signum in handled}
        # An operator (or a test) facing a node that answers nothing asks it what every
        # thread is doing: SIGUSR1 prints their stacks to stderr (the journal), from C,
        # so it works even while a thread holds the GIL.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            self.start()
            while (signum := _next_signal(reader, handled)) == signal.SIGHUP:
                log.info("node_reloading", what="tls certificates")
                self.reload_tls()
            log.info("node_stopping", signal=signal.Signals(signum).name)
        finally:
            try:
                self.stop()
            finally:
                for restored, handler in previous.items():
                    signal.signal(restored, handler)
                signal.set_wakeup_fd(previous_fd)
                faulthandler.unregister(signal.SIGUSR1)
                reader.close()
                writer.close()

    def _admin_server(self, access: AdminAccess) -> AdminServer:
        """The admin API over this node's parts (``check_config`` vetted its access)."""
        admin = self.config.admin
        services = AdminServices(
            database=self.database,
            index=self.index,
            spool=self.spool,
            jobs=self.workers.queue,
            sends=self.outbox.queue,
            rules=self.rules,
            decisions=self.router.decisions,
            destinations=self.config.destinations,
            pipelines=pipeline_findings(self.pipelines),
            calling_ae=self.config.node.ae_title,
            # A node without the receive role has no listener to wait for.
            scp_listening=lambda: self.scp.listening or "receive" not in self.roles,
            disk=DiskWatermark(
                self.config.spool_path,
                self.config.storage.high_water_percent,
                self.config.storage.min_free_bytes,
            ),
            counters=self.counters,
            wake_sends=self.outbox.wake,
            wake_jobs=self.workers.wake,
            wake_routing=self.router.notify,
            dicom_port=lambda: self.scp.port,
            dicom_tls_port=lambda: self.scp.tls_port,
            node_id=self.lease.owner,
            roles=tuple(self.config.node.roles),
            lease_seconds=self.lease.seconds,
            provenance=lambda name: self.engine.provenance(name, None),
        )
        app = create_app(services, access, metrics_public=admin.metrics_public)
        https = AdminHTTPS(admin.tls) if admin.tls is not None else None
        if https is not None:
            self.tls_reloaders.append(https.reload)
        return AdminServer(app, admin.host, admin.port, https)

    def _on_notice(self, payload: str) -> None:
        """Work was queued somewhere in the cluster: wake the local worker for it."""
        if payload == ROUTE and "route" in self.roles:
            self.router.notify()
        elif payload == JOB and "pipeline" in self.roles:
            self.workers.wake()
        elif payload.startswith(SEND_PREFIX) and "send" in self.roles:
            self.outbox.wake(payload.removeprefix(SEND_PREFIX))

    def _jobs_queued(self) -> None:
        self.workers.wake()

    def _load_models_in_use(self) -> None:
        """Load (and keep warm) the models of pipelines the rules in force name.

        Others load on first use; ``dicomnode config check`` loads them all.
        """
        used = {rule.pipeline for rule in self.rules.current if rule.pipeline}
        for name in sorted(used):
            self.models.runner(self.pipelines[name].model).load()

    def _sends_queued(self, destinations: Iterable[str]) -> None:
        for destination in set(destinations):
            self.outbox.wake(destination)

    def _reconcile(self) -> None:
        """Remove spool files the index does not know: written, never acknowledged.

        A crash between the rename and the index commit leaves such a file; the sender
        got no success for it and will send it again. Only this node's own files: on
        shared storage another node's file may be between its rename and its commit.
        """
        known = self.index.spool_names(self.spool.prefix)
        present = set(self.spool.names())
        orphans = present - known
        for name in orphans:
            self.spool.remove(name)
        if orphans:
            log.warning("spool_orphans_removed", count=len(orphans))
        if missing := len(known - present):
            log.error("spool_files_missing", count=missing)


def _note_signal(_signum: int, _frame: FrameType | None) -> None:
    """A Python handler that does nothing: the number arrives through the wakeup socket."""


def _next_signal(reader: socket.socket, handled: tuple[signal.Signals, ...]) -> int:
    """Block until one of ``handled`` arrives (a SIGTERM ahead of a queued SIGHUP wins)."""
    while True:
        received = [number for number in reader.recv(64) if number in handled]
        if not received:
            continue
        stops = [number for number in received if number != signal.SIGHUP]
        return stops[0] if stops else signal.SIGHUP


def _make_storage_folder(path: Path) -> None:
    """Create ``storage.path``, or say in one line why not and what to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"storage.path {path}: cannot create it ({exc.strerror or exc}); set storage.path "
            "(or serve --storage) to a folder this user can write"
        ) from exc
