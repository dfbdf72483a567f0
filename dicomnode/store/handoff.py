"""The transactions that cross stages: one stage hands work to the next in its own commit.

Routing queues sends and pipeline jobs, a job queues the sends of its results and
findings, an IOCM rejection note cancels jobs: each inside the transaction that records
why, so the work exists exactly when its reason does. These writes live here, beside the
claims that take the work (:mod:`dicomnode.store.claims`), so that routing, pipelines and
the outbox are siblings that share the database, not a stack that imports itself down.
Each hand-off also notifies the cluster (:mod:`dicomnode.store.notify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.store.notify import JOB, SEND_PREFIX, notify
from dicomnode.store.tables import InstanceRow, JobRow, SendItemRow, SendRow


def queue_send(
    session: Session,
    destination: str,
    series_id: int,
    series_version: int,
    origin: str,
    now: datetime,
) -> int:
    """Add a send of a series version's instances, inside the caller's transaction."""
    instance_ids = list(
        session.scalars(
            select(InstanceRow.id).where(
                InstanceRow.series_id == series_id,
                InstanceRow.series_version == series_version,
            )
        )
    )
    row = SendRow(
        destination=destination,
        series_id=series_id,
        series_version=series_version,
        origin=origin,
        state="pending",
        created_at=now,
        age_from=now,
        next_attempt_at=now,
        instance_count=len(instance_ids),
    )
    session.add(row)
    session.flush()
    session.add_all(
        SendItemRow(send_id=row.id, instance_id=iid, state="pending") for iid in instance_ids
    )
    notify(session, SEND_PREFIX + destination)
    return row.id


def queue_job(
    session: Session,
    series_id: int,
    series_version: int,
    rule: str,
    pipeline: str,
    send_to: Sequence[str],
    now: datetime,
    on_findings: Sequence[dict[str, Any]] = (),
    shadow: bool = False,
) -> int:
    """Add a job inside the caller's transaction (the routing decision's).

    ``on_findings``: the rule's entries, kept with the job so that it routes its
    findings by the rules it was routed under, whatever the rules are when it ends.
    ``shadow``: the job keeps its results and sends nothing (docs/shadow.md).
    """
    destinations: dict[str, Any] = {"destinations": list(send_to)}
    if on_findings:
        destinations["on_findings"] = list(on_findings)
    row = JobRow(
        series_id=series_id,
        series_version=series_version,
        rule=rule,
        pipeline=pipeline,
        send_to=destinations,
        state="pending",
        created_at=now,
        timeline={"stages": []},
        shadow=shadow,
    )
    session.add(row)
    session.flush()
    notify(session, JOB)
    return row.id


def cancel_pending_jobs(
    session: Session, series_id: int, from_version: int, reason: str, now: datetime
) -> list[int]:
    """Cancel a series' pending jobs that would load ``from_version`` or later.

    Inside the caller's transaction (an IOCM rejection note's, docs/routing.md): a job
    loads every version up to its own, so these are the ones that would read the
    rejected instances. A running job is left to end. Returns the cancelled jobs' ids.
    """
    rows = session.scalars(
        select(JobRow).where(
            JobRow.series_id == series_id,
            JobRow.series_version >= from_version,
            JobRow.state == "pending",
        )
    )
    cancelled = []
    for row in rows:
        row.state, row.error, row.finished_at = "cancelled", reason[:1024], now
        cancelled.append(row.id)
    return cancelled
