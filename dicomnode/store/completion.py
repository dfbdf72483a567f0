"""Series completion timers: apscheduler fires them, the database holds their state.

A timer is armed when a series (or a new version) starts receiving and when its
association is released; each further instance only moves the deadline in the database.
When a timer fires early (because later instances pushed the deadline out) it re-arms
itself for the stored deadline. After a restart every receiving series is re-armed from
the database, so none is forgotten and none waits longer than its policy says.

Each series has its own timer, so one that cannot complete (its row unreadable, the
database briefly locked) never delays another: its timer is re-armed with a delay that
doubles up to ``_MAX_RETRY``, and each listener is called on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger

from dicomnode.config import CompletionConfig
from dicomnode.logs import get_logger
from dicomnode.store.deadline import Deadline
from dicomnode.store.index import Completion, Index

log = get_logger(__name__)

Clock = Callable[[], datetime]
CompletionListener = Callable[[Completion], None]
_FIRST_RETRY = timedelta(seconds=1)
_MAX_RETRY = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CompletionTracker:
    """Declares series complete at the right moment, durably."""

    def __init__(
        self,
        index: Index,
        config: CompletionConfig,
        scheduler: BaseScheduler,
        clock: Clock = utc_now,
    ) -> None:
        self._index = index
        self._config = config
        self._scheduler = scheduler
        self._clock = clock
        self._listeners: list[CompletionListener] = []
        self._failures: dict[int, int] = {}  # series id -> failed completions in a row

    def subscribe(self, listener: CompletionListener) -> None:
        """Call ``listener`` after each completion has been committed."""
        self._listeners.append(listener)

    def resume(self) -> int:
        """Re-arm the timers of every series still receiving; returns how many."""
        pending = self._index.receiving_deadlines()
        for series_id, deadline in pending:
            self._arm(series_id, deadline)
        if pending:
            log.info("series_completion_resumed", count=len(pending))
        return len(pending)

    def sweep(self) -> int:
        """Complete every series past its stored deadline with no timer here to do it.

        In a cluster a series' timer lives on the nodes that received it; one that died
        took its timers along, so every node looks for overdue series now and then. A
        series completes once, whoever looks (``complete_if_due`` locks its row).
        """
        overdue = self._index.overdue_series(self._clock())
        for series_id in overdue:
            self._fire(series_id)
        return len(overdue)

    def watch(self, series_id: int, deadline: Deadline) -> None:
        """A series started receiving: arm its timer."""
        self._arm(series_id, deadline.at)

    def association_released(self, association_id: int) -> None:
        """Start the settle clock of the series this association delivered."""
        moved = self._index.close_association(
            association_id, True, self._clock(), self._config.policy_for
        )
        for series_id, deadline in moved:
            self._arm(series_id, deadline.at)

    def _arm(self, series_id: int, when: datetime) -> None:
        self._scheduler.add_job(
            self._fire,
            trigger=DateTrigger(run_date=when, timezone=UTC),
            args=(series_id,),
            id=f"series-complete-{series_id}",
            replace_existing=True,
            misfire_grace_time=None,  # a late timer still completes its series
            coalesce=True,
        )

    def _fire(self, series_id: int) -> None:
        try:
            result = self._index.complete_if_due(series_id, self._clock(), self._config.policy_for)
        except Exception as exc:  # this series' timer is the unit: logged below
            failures = self._failures.get(series_id, 0) + 1
            self._failures[series_id] = failures
            delay = min(_FIRST_RETRY * 2 ** (failures - 1), _MAX_RETRY)
            log.warning(
                "series_completion_failed",
                series_id=series_id,
                reason=f"{type(exc).__name__}: {exc}",
                failures=failures,
                retry_in_seconds=delay.total_seconds(),
                exc_info=True,
            )
            self._arm(series_id, self._clock() + delay)
            return
        self._failures.pop(series_id, None)
        if isinstance(result, Deadline):
            self._arm(series_id, result.at)
        elif isinstance(result, Completion):
            log.info(
                "series_completed",
                series_id=result.series_id,
                study_uid=result.study_uid,
                series_uid=result.series_uid,
                version=result.version,
                instance_count=result.instance_count,
                reason=result.reason,
                modality=result.modality,
            )
            for listener in self._listeners:
                try:
                    listener(result)
                except Exception:
                    # A listener's failure is its own; the others still hear of it, and
                    # the router finds the entry in the durable queue regardless.
                    log.exception("completion_listener_failed", series_id=result.series_id)
