"""Routing on findings at the end of a job: what a pipeline can find, and the sends a done
job's ``on_findings`` entries add (docs/rules.md, "Routing on findings").

The rules engine decides (``dicomnode.rules.findings``); this module knows the pipeline
definitions and queues the sends, inside the transaction that marks the job done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.pipeline.definition import ClassificationOutput, PipelineDefinition
from dicomnode.pipeline.jobs import JobQueue
from dicomnode.rules.findings import (
    FindingValues,
    PipelineFindings,
    RouteVerdict,
    route_findings,
    routes_from_dicts,
)
from dicomnode.store.handoff import queue_send
from dicomnode.store.tables import InstanceRow, SendRow


def findings_of(definition: PipelineDefinition | None) -> PipelineFindings:
    """The findings a pipeline's output can report (none for an unknown pipeline)."""
    if definition is None:
        return PipelineFindings()
    output = definition.output
    if isinstance(output, ClassificationOutput):
        return PipelineFindings(
            classifier=tuple((f.finding.meaning, f.threshold) for f in output.findings)
        )
    return PipelineFindings(segments=tuple(segment.name for segment in output.segments))


def pipeline_findings(pipelines: Mapping[str, PipelineDefinition]) -> dict[str, PipelineFindings]:
    """For the rule loader: each pipeline's name and findings, so that ``on_findings``
    keys are checked against them."""
    return {name: findings_of(definition) for name, definition in pipelines.items()}


@dataclass(frozen=True, slots=True)
class Routed:
    """An entry that fired, and the sends it added (destinations already sent to are not
    queued twice)."""

    entry: str
    results_to: tuple[str, ...]
    forwarded_to: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "results_to": list(self.results_to),
            "forwarded_to": list(self.forwarded_to),
        }


def evaluate_job(
    entries: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    definition: PipelineDefinition | None,
) -> tuple[RouteVerdict, ...]:
    """The verdict of each stored entry on a job's result summary; ValueError when an
    entry cannot be read back (it was stored by the router from a validated rule)."""
    values = FindingValues.from_summary(summary, findings_of(definition))
    return route_findings(routes_from_dicts(entries), values)


def queue_routes(
    session: Session,
    verdicts: Sequence[RouteVerdict],
    *,
    job_id: int,
    series_id: int,
    series_version: int,
    send_to: Sequence[str],
    result_series: Sequence[int],
    now: datetime,
) -> list[Routed]:
    """Queue the sends of the entries that fired, in the caller's transaction.

    Results go to each ``send_results_to`` not already in the job's ``send_to``; the
    source series (every version the job read) to each ``forward_to`` it has not been
    queued for yet. The sends' origin is the job's, so they show with it.
    """
    results_sent = set(send_to)
    routed: list[Routed] = []
    origin = f"job:{job_id}"
    for verdict in verdicts:
        if not verdict.fired:
            continue
        results_to = [d for d in verdict.route.send_results_to if d not in results_sent]
        for destination in results_to:
            for result in result_series:
                queue_send(session, destination, result, 1, origin, now)
            results_sent.add(destination)
        forwarded = []
        for destination in verdict.route.forward_to:
            versions = _unsent_versions(session, destination, series_id, series_version)
            for version in versions:
                queue_send(session, destination, series_id, version, origin, now)
            if versions:
                forwarded.append(destination)
        routed.append(Routed(verdict.route.name, tuple(results_to), tuple(forwarded)))
    return routed


def _unsent_versions(session: Session, destination: str, series_id: int, up_to: int) -> list[int]:
    """The series' versions up to ``up_to`` with instances and no send to ``destination``
    yet (a rule's ``forward_to`` or an earlier job's entry may have queued them)."""
    held = session.scalars(
        select(InstanceRow.series_version)
        .where(InstanceRow.series_id == series_id, InstanceRow.series_version <= up_to)
        .distinct()
    )
    queued = set(
        session.scalars(
            select(SendRow.series_version).where(
                SendRow.series_id == series_id, SendRow.destination == destination
            )
        )
    )
    return sorted(version for version in held if version not in queued)


def stored_findings(
    jobs: JobQueue, series_id: int, catalog: Mapping[str, PipelineFindings]
) -> dict[str, FindingValues]:
    """Per pipeline, what its latest done job on a stored series found (for ``rules
    explain --series`` and dry runs, which evaluate ``on_findings`` entries on it)."""
    return {
        pipeline: FindingValues.from_summary(summary, catalog.get(pipeline, PipelineFindings()))
        for pipeline, summary in jobs.done_summaries(series_id).items()
    }
