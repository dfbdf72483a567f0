"""The router: each completed series version is routed exactly once.

It consumes the durable completion queue. For each entry it evaluates the rules in force
on the series' attributes, then, in one transaction, stores the decision (rules version,
matched rules, actions), queues the sends to each ``forward_to`` destination and a job
for each pipeline, and marks the entry consumed. A crash before the commit routes the
entry again after restart; a crash after it cannot route it twice (one decision per
series version).

Each entry is routed on its own: one whose routing raises (an instance file missing or
unreadable, a database error) is recorded as failed with its reason and tried again
later with backoff (:mod:`.queue`), and the entries behind it are routed meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select, update

from dicomnode.errors import RoutingError
from dicomnode.logs import get_logger
from dicomnode.routing.live_rules import LiveRules
from dicomnode.routing.queue import DEFAULT_RETRY, RoutingEntry, RoutingQueue, RoutingRetry
from dicomnode.routing.rejection import NOTHING_APPLIED, Rejections, Screening
from dicomnode.rules.attributes import SeriesAttributes, attributes_from_datasets
from dicomnode.rules.findings import route_as_dict
from dicomnode.rules.matching import Evaluation, evaluate
from dicomnode.rules.model import RuleSet
from dicomnode.store.claims import LOCAL, Lease
from dicomnode.store.database import Database
from dicomnode.store.handoff import queue_job, queue_send
from dicomnode.store.header import ROUTING_KEYWORDS
from dicomnode.store.index import Completion, Index
from dicomnode.store.spool import Spool
from dicomnode.store.tables import CompletionRow, RoutingDecisionRow

log = get_logger(__name__)

Clock = Callable[[], datetime]
CLAIM_BATCH = 50  # entries claimed at a time (a lease each, renewed by the heartbeat)
DERIVED = frozenset({"ImageCount", "CallingAETitle", "CalledAETitle", "SourceHost"})


class Router:
    """Routes completed series on its own thread, woken by each completion."""

    def __init__(
        self,
        database: Database,
        index: Index,
        spool: Spool,
        rules: LiveRules,
        sends_queued: Callable[[Iterable[str]], None],
        jobs_queued: Callable[[], None],
        clock: Clock,
        retry: RoutingRetry = DEFAULT_RETRY,
        lease: Lease = LOCAL,
        shadow_pipelines: Collection[str] = (),
    ) -> None:
        self._db = database
        # Pipelines defined with shadow: true: every job of them is a shadow job.
        self._shadow_pipelines = frozenset(shadow_pipelines)
        self.queue = RoutingQueue(database, retry, lease)
        self._index = index
        self._spool = spool
        self._rejections = Rejections(database, spool)
        self._rules = rules
        self._sends_queued = sends_queued
        self._jobs_queued = jobs_queued
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router", daemon=True)

    def start(self) -> None:
        self.queue.release_own()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self.queue.release_own()  # what it claimed and did not route: free for others
        except Exception:  # stopping goes on; the leases expire anyway
            log.warning("routing_claims_not_released", exc_info=True)

    def notify(self, _completion: Completion | None = None) -> None:
        """A series completed: route it now."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.route_pending() >= CLAIM_BATCH:
                    continue  # more are waiting
            except Exception:
                # The root of this thread (the queue itself unreadable, e.g. the database
                # down): log and try again shortly. A unit's failure never gets here.
                log.exception("router_loop_failed")
                self._stopping.wait(5.0)
            self._wake.wait(10.0)

    def route_pending(self) -> int:
        """Route every completion due now, each on its own; returns how many were tried."""
        entries = self.queue.claim_due(self._clock(), CLAIM_BATCH)
        for entry in entries:
            if self._stopping.is_set():
                break
            self._route_one(entry)
        return len(entries)

    def retry(self, series_id: int) -> int:
        """Route a series' failed versions again now (an operator's retry); how many."""
        count = self.queue.retry(series_id)
        if count:
            self._wake.set()
        return count

    def _route_one(self, entry: RoutingEntry) -> None:
        """Route one entry; a failure is recorded on it and never reaches the loop."""
        try:
            self._route(entry.id, entry.series_id, entry.version)
        except Exception as exc:  # noqa: BLE001 - one unit's root: recorded and logged below
            # One unit's failure: recorded with its reason, the next entry goes on.
            reason = str(exc) if isinstance(exc, RoutingError) else f"{type(exc).__name__}: {exc}"
            self._record_failure(entry, reason, exc)

    def _record_failure(self, entry: RoutingEntry, reason: str, exc: Exception) -> None:
        outcome = self.queue.fail(entry, reason, self._clock())
        summary = self._index.series_by_id(entry.series_id)
        log.warning(
            "routing_failed",
            series_id=entry.series_id,
            series_uid=summary.series_uid if summary else None,
            version=entry.version,
            reason=reason,
            failures=entry.failures + 1,
            permanent=outcome.permanent,
            next_attempt_at=outcome.next_attempt_at.isoformat()
            if outcome.next_attempt_at
            else None,
            exc_info=not isinstance(exc, RoutingError),
        )

    def attributes(self, series_id: int, version: int, ruleset: RuleSet) -> SeriesAttributes:
        """What the rules see of a stored series version."""
        return stored_series_attributes(self._index, self._spool, series_id, version, ruleset)

    def decisions(self, series_id: int) -> list[dict[str, Any]]:
        """Every routing decision of a series, oldest version first."""
        with self._db.reading() as session:
            rows = session.scalars(
                select(RoutingDecisionRow)
                .where(RoutingDecisionRow.series_id == series_id)
                .order_by(RoutingDecisionRow.version)
            )
            return [
                {
                    "version": row.version,
                    "rules_version": row.rules_version,
                    "decided_at": row.decided_at.isoformat(),
                    "unrouted": row.unrouted,
                    **row.decision,
                }
                for row in rows
            ]

    def _route(self, entry_id: int, series_id: int, version: int) -> None:
        screening = self._rejections.screen(series_id, version)  # IOCM: docs/routing.md
        ruleset = self._rules.current
        evaluation = evaluate(ruleset, self.attributes(series_id, version, ruleset))
        self._commit(entry_id, series_id, version, screening.restrict(evaluation), screening)

    def _commit(
        self,
        entry_id: int,
        series_id: int,
        version: int,
        evaluation: Evaluation,
        screening: Screening,
    ) -> None:
        """Store the decision, queue its sends and jobs, consume the entry: one transaction."""
        decision = evaluation.decision
        now = self._clock()
        destinations: list[str] = []
        applied = NOTHING_APPLIED
        with self._db.writing() as session:
            # Locked: another node's router that claimed the entry too (its lease had
            # expired) waits here, then finds it consumed and writes nothing.
            found = session.execute(
                select(CompletionRow.consumed_at, CompletionRow.rerouted_by)
                .where(CompletionRow.id == entry_id)
                .with_for_update()
            ).one()
            if found.consumed_at is not None:
                return
            rerouted_by = found.rerouted_by
            previous = session.scalar(
                select(RoutingDecisionRow)
                .where(
                    RoutingDecisionRow.series_id == series_id,
                    RoutingDecisionRow.version == version,
                )
                .with_for_update()
            )
            already = None if rerouted_by is not None else previous
            if already is None:
                content = {**decision.as_dict(), **screening.as_dict()}
                if rerouted_by is not None:
                    content.update(_rerouted(rerouted_by, previous))
                row = previous or RoutingDecisionRow(series_id=series_id, version=version)
                # A re-route replaces this version's decision (one per version); the one
                # it replaces is kept inside it, under "replaced".
                row.rules_version, row.decided_at = evaluation.version, now
                row.unrouted, row.decision = screening.unrouted(decision), content
                session.add(row)
                for destination in decision.forward_to:
                    origin = _origin(evaluation, destination)
                    queue_send(session, destination, series_id, version, origin, now)
                    destinations.append(destination)
                for run in decision.pipeline_runs:
                    queue_job(
                        session,
                        series_id,
                        version,
                        run.rule,
                        run.pipeline,
                        run.send_to,
                        now,
                        on_findings=[route_as_dict(route) for route in run.on_findings],
                        shadow=run.shadow or run.pipeline in self._shadow_pipelines,
                    )
                applied = self._rejections.apply(session, screening, destinations, now)
                destinations += applied.destinations
            session.execute(
                update(CompletionRow)
                .where(CompletionRow.id == entry_id)
                .values(consumed_at=now, owner=None, lease_until=None)
            )
        if already is not None:
            return
        applied.log()
        log.info(
            "series_routed" if decision.routed else "series_unrouted",
            rerouted_by=rerouted_by,
            series_id=series_id,
            version=version,
            rules_version=evaluation.version,
            matched_rules=list(decision.matched_rules),
            forward_to=list(decision.forward_to),
            pipelines=[run.pipeline for run in decision.pipeline_runs],
        )
        if destinations:
            self._sends_queued(destinations)
        if decision.pipeline_runs:
            self._jobs_queued()


def stored_series_attributes(
    index: Index, spool: Spool, series_id: int, version: int, ruleset: RuleSet
) -> SeriesAttributes:
    """What the rules see of a stored series version.

    Indexed attributes come from the index; any other keyword a rule uses is read from
    the headers of the version's spooled instances, so a rule may name any keyword.
    """
    summary = index.series_by_id(series_id)
    values: dict[str, Any] = dict(index.series_attributes(series_id))
    values.update(index.series_origin(series_id, version))
    unindexed = [
        kw for kw in ruleset.keywords() if kw not in DERIVED and kw not in ROUTING_KEYWORDS
    ]
    if unindexed:
        paths = [
            spool.path(row.spool_name)
            for row in index.instances_of(series_id)
            if row.series_version == version
        ]
        values.update(_read_attributes(paths, unindexed))
    return SeriesAttributes.from_values(
        values,
        image_count=summary.instance_count if summary else None,
        series_uid=summary.series_uid if summary else None,
    )


def _rerouted(actor: str, previous: RoutingDecisionRow | None) -> dict[str, Any]:
    """What a re-routed decision says of itself: by whom, and the decisions it replaced."""
    earlier: list[dict[str, Any]] = []
    if previous is not None:
        content = dict(previous.decision)
        earlier = list(content.pop("replaced", []))
        for key in ("rerouted", "rerouted_by"):
            content.pop(key, None)
        earlier.append(
            {
                "rules_version": previous.rules_version,
                "decided_at": previous.decided_at.isoformat(),
                "unrouted": previous.unrouted,
                "rerouted_by": previous.decision.get("rerouted_by"),
                "matched_rules": content.get("matched_rules", []),
                "forward_to": content.get("forward_to", []),
            }
        )
    return {"rerouted": True, "rerouted_by": actor, "replaced": earlier}


def _origin(evaluation: Evaluation, destination: str) -> str:
    for verdict in evaluation.verdicts:
        if verdict.matched and destination in verdict.rule.forward_to:
            return f"rule:{verdict.rule.name}"
    return "rules"


def _read_attributes(paths: list[Path], keywords: list[str]) -> dict[str, Any]:
    """The keywords' values across the files; a file that cannot be read names itself.

    Values are decoded lazily, as the keywords are read, so an element pydicom cannot
    decode raises there and not in ``dcmread``: both are caught around the whole read.
    """
    reading: list[Path] = []

    def headers() -> Iterable[pydicom.Dataset]:
        for path in paths:
            reading.append(path)
            yield pydicom.dcmread(path, stop_before_pixels=True)

    try:
        return dict(attributes_from_datasets(headers(), keywords))
    except Exception as exc:
        # pydicom raises many types on broken files (OSError, InvalidDicomError,
        # ValueError, KeyError, struct.error ...): each is this file's failure.
        name = reading[-1].name if reading else "?"
        raise RoutingError(
            f"cannot read instance file {name}: {type(exc).__name__}: {exc}"
        ) from exc
