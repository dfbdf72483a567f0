"""The outbox's durable state: sends, their instances and every attempt.

A send moves ``pending -> sending -> done | failed``; a temporary failure puts it back to
``pending`` with a later ``next_attempt_at``. Instances are marked sent only after the
destination acknowledged them, so delivery is at least once: after a crash, a send left
``sending`` goes back to ``pending`` and its unacknowledged instances go again.

A send being sent is leased to its node (:mod:`dicomnode.store.claims`): in a cluster,
another node takes over a ``sending`` send only once that lease expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from dicomnode.config import RetryPolicy
from dicomnode.logs import get_logger
from dicomnode.outbox.backoff import retry_delay
from dicomnode.store.claims import LOCAL, Lease, taken_over
from dicomnode.store.database import Database
from dicomnode.store.notify import SEND_PREFIX, notify
from dicomnode.store.tables import InstanceRow, SendAttemptRow, SendItemRow, SendRow

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One instance to send, and where it lies in the spool."""

    item_id: int
    spool_name: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int


@dataclass(frozen=True, slots=True)
class SendWork:
    send_id: int
    destination: str
    attempt: int
    items: tuple[WorkItem, ...]


@dataclass(frozen=True, slots=True)
class ItemResult:
    item_id: int
    state: str  # sent | failed | pending (temporary: try again)
    status: int | None


@dataclass(frozen=True, slots=True)
class SendSummary:
    """A send as operators see it in ``dicomnode jobs``."""

    id: int
    destination: str
    series_id: int
    series_version: int
    origin: str
    state: str
    reason: str | None
    attempts: int
    instance_count: int
    sent_count: int
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None
    # Storage commitment: None (not asked) | requested | committed | failed | timed_out |
    # unrequested (the request itself failed)
    commitment: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    started_at: datetime
    ended_at: datetime
    outcome: str
    status: int | None
    detail: str
    sent: int


@dataclass(frozen=True, slots=True)
class Finish:
    """How an attempt ended, as the worker saw it."""

    failure: str | None = None  # association-level failure, if any
    permanent: bool = False  # retrying cannot cure it (e.g. rejected-permanent)
    sent: int = 0  # instances the destination acknowledged during this attempt
    refusal: str | None = None  # why the first instance refused for good was refused


class OutboxQueue:
    """Database operations of the outbox."""

    def __init__(self, database: Database, lease: Lease = LOCAL) -> None:
        self._db = database
        self.lease = lease

    def resume_interrupted(self) -> int:
        """Sends this node's previous run left ``sending`` go back to ``pending``.

        Only its own (and, on SQLite, where it is the only node, any): another live
        node's sends are that node's, and a dead one's are taken over when its lease
        expires. Returns how many.
        """
        with self._db.writing() as session:
            mine = SendRow.state == "sending"
            if session.get_bind().dialect.name != "sqlite":
                mine = and_(mine, or_(SendRow.owner == self.lease.owner, SendRow.owner.is_(None)))
            result = session.execute(
                update(SendRow).where(mine).values(state="pending", owner=None, lease_until=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has it

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        """Due, or being sent by a node whose lease ran out."""
        due = and_(SendRow.state == "pending", SendRow.next_attempt_at <= now)
        return or_(
            due, taken_over(SendRow.state, "sending", SendRow.owner, SendRow.lease_until, now)
        )

    def next_due_at(self, destination: str) -> datetime | None:
        with self._db.reading() as session:
            return session.scalar(
                select(func.min(SendRow.next_attempt_at)).where(
                    SendRow.destination == destination, SendRow.state == "pending"
                )
            )

    def claim_next(self, destination: str, now: datetime) -> SendWork | None:
        """Claim the destination's next due send (or one a dead node left), if any.

        ``FOR UPDATE SKIP LOCKED``: nodes claiming at once each get another send.
        """
        with self._db.writing() as session:
            send = session.scalars(
                select(SendRow)
                .where(SendRow.destination == destination, self._claimable(now))
                .order_by(SendRow.next_attempt_at, SendRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            return None if send is None else self._take(session, send, now)

    def _take(self, session: Session, send: SendRow, now: datetime) -> SendWork:
        """Mark ``send`` as this node's, being sent; return its unsent instances."""
        if send.state == "sending":
            log.warning(
                "send_taken_over",
                send_id=send.id,
                destination=send.destination,
                previous_owner=send.owner,
            )
        send.state, send.owner, send.lease_until = (
            "sending",
            self.lease.owner,
            self.lease.until(now),
        )
        send.attempts += 1
        rows = session.execute(
            select(
                SendItemRow.id,
                InstanceRow.spool_name,
                InstanceRow.sop_class_uid,
                InstanceRow.sop_instance_uid,
                InstanceRow.transfer_syntax_uid,
                InstanceRow.size,
            )
            .join(InstanceRow, InstanceRow.id == SendItemRow.instance_id)
            .where(SendItemRow.send_id == send.id, SendItemRow.state == "pending")
            .order_by(SendItemRow.id)
        )
        items = tuple(WorkItem(*row) for row in rows)
        return SendWork(send.id, send.destination, send.attempts, items)

    def record_items(self, send_id: int, results: Sequence[ItemResult]) -> None:
        """Persist per-instance outcomes (called in batches while a send runs)."""
        if not results:
            return
        groups: dict[tuple[str, int | None], list[int]] = {}
        for result in results:
            groups.setdefault((result.state, result.status), []).append(result.item_id)
        with self._db.writing() as session:
            # Usually one statement: every instance of the batch "sent" with 0x0000.
            for (state, status), ids in groups.items():
                session.execute(
                    update(SendItemRow)
                    .where(SendItemRow.id.in_(ids))
                    .values(state=state, status=status)
                )
            sent = session.scalar(
                select(func.count(SendItemRow.id)).where(
                    SendItemRow.send_id == send_id, SendItemRow.state == "sent"
                )
            )
            session.execute(update(SendRow).where(SendRow.id == send_id).values(sent_count=sent))

    def finish(
        self,
        send_id: int,
        started_at: datetime,
        now: datetime,
        finish: Finish,
        policy: RetryPolicy,
        last_status: int | None,
    ) -> SendSummary:
        """Decide the send's next state from its instances and the attempt's failure."""
        with self._db.writing() as session:
            send = session.get_one(SendRow, send_id, with_for_update=True)
            if send.state != "sending" or send.owner != self.lease.owner:
                # Our lease ran out and another node took the send over: its attempt
                # decides the send now; this one's acknowledgements are recorded.
                log.warning("send_lease_lost", send_id=send_id, owner=send.owner)
                return _summary(send)
            counts = dict(
                session.execute(
                    select(SendItemRow.state, func.count(SendItemRow.id))
                    .where(SendItemRow.send_id == send_id)
                    .group_by(SendItemRow.state)
                ).all()
            )
            pending, failed = counts.get("pending", 0), counts.get("failed", 0)
            send.sent_count = counts.get("sent", 0)
            if finish.failure and finish.permanent:
                outcome, send.state, send.reason = "permanent", "failed", finish.failure
            elif pending == 0 and failed == 0:
                outcome, send.state, send.reason = "delivered", "done", None
            elif pending == 0:
                outcome, send.state = "permanent", "failed"
                send.reason = f"{failed} instance(s) refused by the destination" + (
                    f": {finish.refusal}"
                    if finish.refusal
                    else f" (last status 0x{last_status:04X})"
                    if last_status is not None
                    else ""
                )
            elif now - send.age_from >= timedelta(seconds=policy.max_age_seconds):
                last = finish.failure or f"{pending} instance(s) not accepted"
                outcome, send.state = "temporary", "failed"
                send.reason = f"gave up after {policy.max_age_seconds:.0f} s: {last}"
            else:
                outcome, send.state = "temporary", "pending"
                send.reason = finish.failure or f"{pending} instance(s) not yet accepted"
                send.next_attempt_at = now + timedelta(seconds=retry_delay(policy, send.attempts))
            send.owner = send.lease_until = None
            if send.state in {"done", "failed"}:
                send.finished_at = now
            session.add(
                SendAttemptRow(
                    send_id=send_id,
                    started_at=started_at,
                    ended_at=now,
                    outcome=outcome,
                    status=last_status,
                    detail=(send.reason or "delivered")[:512],
                    sent=finish.sent,
                )
            )
            session.flush()
            return _summary(send)

    # -- storage commitment (PS3.4 Annex J) ----------------------------------------------

    def begin_commitment(
        self, send_id: int, transaction_uid: str, due: datetime
    ) -> list[tuple[str, str]]:
        """Record the request before it goes (the report may race back); return the
        send's instances as (SOP Class, SOP Instance) UIDs."""
        with self._db.writing() as session:
            send = session.get_one(SendRow, send_id)
            send.commitment, send.commitment_uid, send.commitment_due = (
                "requested",
                transaction_uid,
                due,
            )
            rows = session.execute(
                select(InstanceRow.sop_class_uid, InstanceRow.sop_instance_uid)
                .join(SendItemRow, SendItemRow.instance_id == InstanceRow.id)
                .where(SendItemRow.send_id == send_id)
                .order_by(SendItemRow.id)
            )
            return [(str(c), str(i)) for c, i in rows]

    def commitment_unrequested(self, send_id: int, why: str) -> None:
        """The N-ACTION failed: the send stays delivered, its reason says why unproven."""
        with self._db.writing() as session:
            send = session.get_one(SendRow, send_id)
            if send.commitment == "requested":
                send.commitment, send.commitment_due = "unrequested", None
                send.reason = f"storage commitment not requested: {why}"

    def record_commitment(
        self, transaction_uid: str, failed: Sequence[tuple[str, int]]
    ) -> SendSummary | None:
        """Apply a report: committed, or failed naming how many and why; the failed
        instances are marked failed, so ``dicomnode retry`` sends exactly those again.
        None when no send waits for this transaction (unknown, late or repeated)."""
        with self._db.writing() as session:
            send = session.scalars(
                select(SendRow).where(SendRow.commitment_uid == transaction_uid).limit(1)
            ).first()
            if send is None or send.commitment not in {"requested", "timed_out"}:
                return None
            send.commitment_due = None
            if not failed:
                send.commitment = "committed"
                if send.state == "done":
                    send.reason = None
                session.flush()
                return _summary(send)
            reasons = sorted({reason for _uid, reason in failed})
            failed_uids = [uid for uid, _reason in failed]
            items = session.scalars(
                select(SendItemRow.id)
                .join(InstanceRow, InstanceRow.id == SendItemRow.instance_id)
                .where(
                    SendItemRow.send_id == send.id,
                    InstanceRow.sop_instance_uid.in_(failed_uids),
                )
            ).all()
            session.execute(
                update(SendItemRow)
                .where(SendItemRow.id.in_(items))
                .values(state="failed", status=reasons[0])
            )
            send.sent_count = max(0, send.sent_count - len(items))
            send.commitment, send.state = "failed", "failed"
            send.reason = (
                f"storage commitment: {len(failed)} instance(s) not committed by the "
                f"destination (failure reason {', '.join(f'0x{r:04X}' for r in reasons)})"
            )
            session.flush()
            return _summary(send)

    def expire_commitments(self, destination: str, now: datetime) -> list[SendSummary]:
        """Requests unanswered past their timeout: delivered, but unproven."""
        with self._db.writing() as session:
            sends = session.scalars(
                select(SendRow).where(
                    SendRow.destination == destination,
                    SendRow.commitment == "requested",
                    SendRow.commitment_due <= now,
                )
            ).all()
            for send in sends:
                send.commitment, send.commitment_due = "timed_out", None
                send.reason = "commitment timed out: no storage commitment report came"
            session.flush()
            return [_summary(send) for send in sends]

    def next_commitment_due(self, destination: str) -> datetime | None:
        with self._db.reading() as session:
            return session.scalar(
                select(func.min(SendRow.commitment_due)).where(
                    SendRow.destination == destination, SendRow.commitment == "requested"
                )
            )

    def retry(self, send_id: int, now: datetime) -> SendSummary | None:
        """Requeue a failed send now; its maximum age counts afresh. None if not failed."""
        with self._db.writing() as session:
            send = session.get(SendRow, send_id)
            if send is None or send.state != "failed":
                return None
            session.execute(
                update(SendItemRow)
                .where(SendItemRow.send_id == send_id, SendItemRow.state == "failed")
                .values(state="pending", status=None)
            )
            send.state, send.reason, send.finished_at = "pending", None, None
            send.commitment = send.commitment_uid = send.commitment_due = None
            send.age_from = send.next_attempt_at = now
            notify(session, SEND_PREFIX + send.destination)
            session.flush()
            return _summary(send)

    def get(self, send_id: int) -> SendSummary | None:
        with self._db.reading() as session:
            row = session.get(SendRow, send_id)
            return None if row is None else _summary(row)

    def list_sends(self, state: str | None = None, limit: int = 200) -> list[SendSummary]:
        with self._db.reading() as session:
            query = select(SendRow).order_by(SendRow.id.desc()).limit(limit)
            if state is not None:
                query = query.where(SendRow.state == state)
            return [_summary(row) for row in session.scalars(query)]

    def attempts(self, send_id: int) -> list[AttemptSummary]:
        with self._db.reading() as session:
            rows = session.scalars(
                select(SendAttemptRow)
                .where(SendAttemptRow.send_id == send_id)
                .order_by(SendAttemptRow.id)
            )
            return [
                AttemptSummary(r.started_at, r.ended_at, r.outcome, r.status, r.detail, r.sent)
                for r in rows
            ]


def _summary(row: SendRow) -> SendSummary:
    return SendSummary(
        id=row.id,
        destination=row.destination,
        series_id=row.series_id,
        series_version=row.series_version,
        origin=row.origin,
        state=row.state,
        reason=row.reason,
        attempts=row.attempts,
        instance_count=row.instance_count,
        sent_count=row.sent_count,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        finished_at=row.finished_at,
        commitment=row.commitment,
    )
