"""``dicomnode_envelope_outside_total``: series outside a model's input envelope, per scanner.

Counted from the job rows, as every other pipeline metric is: a finished job (done,
flagged; or failed, skipped) whose timeline has an ``envelope`` entry counts once per run,
with the model, the pipeline and the scanner (manufacturer, model name, station name)
that entry names. So the count is the cluster's, survives restarts, and cannot disagree
with the jobs the API lists. A protocol change on one scanner shows as that scanner's
series starting to count (docs/envelopes.md has the PromQL).

Each scrape reads only the jobs finished since the previous one (with an overlap for
commits that land late), as the latency histograms do. The scanner labels come from
headers, which any peer writes: each is cut to 64 printable characters, and past 500
label sets new scanners count under ``other`` so that no sender can grow the series
Prometheus keeps without bound.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.store.tables import JobRow

LABELS = ("model", "pipeline", "manufacturer", "scanner_model", "station")
MAX_LABEL_LENGTH = 64
MAX_LABEL_SETS = 500
OTHER = "other"
_LATE_COMMIT = timedelta(minutes=5)  # a job's finished_at may be committed this much later


class EnvelopeCounts:
    """The counter, fed by the timelines of jobs as they finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, datetime], datetime] = {}  # (job, finished_at) in overlap
        self._watermark: datetime | None = None
        self._counts: dict[tuple[str, ...], int] = {}

    def collect(self, session: Session) -> list[Metric]:
        with self._lock:
            self._update(session)
            family = CounterMetricFamily(
                "dicomnode_envelope_outside",
                "Series outside a model's input envelope (skipped or flagged runs), by model, "
                "pipeline and scanner (Manufacturer, Manufacturer's Model Name, Station Name).",
                labels=list(LABELS),
            )
            for labels, count in sorted(self._counts.items()):
                family.add_metric(list(labels), count)
            return [family]

    def _update(self, session: Session) -> None:
        query = select(JobRow.id, JobRow.pipeline, JobRow.finished_at, JobRow.timeline).where(
            JobRow.state.in_(("done", "failed")),
            JobRow.finished_at.is_not(None),
            # as_string: SQLite's JSON_QUOTE of a missing key is 'null', not NULL.
            JobRow.timeline["envelope"].as_string().is_not(None),
        )
        if self._watermark is not None:
            query = query.where(JobRow.finished_at >= self._watermark - _LATE_COMMIT)
        for job_id, pipeline, finished_at, timeline in session.execute(query):
            if (job_id, finished_at) in self._seen:
                continue
            self._seen[(job_id, finished_at)] = finished_at
            envelope = (timeline or {}).get("envelope")
            if isinstance(envelope, dict) and envelope.get("outside"):
                self._count(label_values(pipeline, envelope))
            if self._watermark is None or finished_at > self._watermark:
                self._watermark = finished_at
        if self._watermark is not None:
            horizon = self._watermark - _LATE_COMMIT
            self._seen = {key: at for key, at in self._seen.items() if at >= horizon}

    def _count(self, labels: tuple[str, ...]) -> None:
        if labels not in self._counts and len(self._counts) >= MAX_LABEL_SETS:
            labels = (*labels[:2], OTHER, OTHER, OTHER)
        self._counts[labels] = self._counts.get(labels, 0) + 1


def label_values(pipeline: str, envelope: dict[str, Any]) -> tuple[str, ...]:
    """The label values of one timeline's ``envelope`` entry, bounded."""
    scanner = envelope.get("scanner")
    scanner = scanner if isinstance(scanner, dict) else {}
    return tuple(
        _bounded(value)
        for value in (
            envelope.get("model"),
            pipeline,
            scanner.get("manufacturer"),
            scanner.get("model"),
            scanner.get("station"),
        )
    )


def _bounded(value: object) -> str:
    text = "".join(c for c in str(value or "") if c.isprintable()).strip()
    return text[:MAX_LABEL_LENGTH] or "unknown"
