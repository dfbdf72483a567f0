"""IHE IOCM rejection notes at routing time: applied, never routed by the rules.

The router screens each completed series version before it commits the rules' decision
(docs/routing.md, "Rejection notes"):

- A version holding a rejection note (:mod:`.rejection_note`) is not routed by the rules:
  no pipeline, no ``forward_to``. The instances it names are remembered as rejected
  (``RejectionRow``, by SOP Instance UID, so a note may come before its instances), the
  pending pipeline jobs that would load them are cancelled, their series' rejected count
  is updated, and the note is queued to every destination that received them or has
  them queued.
- A version loading a rejected instance (its own or an earlier version's: a job loads
  every version up to its own) starts no pipeline: a volume with images withdrawn for
  quality or safety reasons is not the one the rule meant. A version every instance of
  which is rejected is not forwarded either; otherwise its forwards go as the rules say,
  and the notes that rejected some of its instances follow them to each destination.

Everything is written in the routing decision's transaction, so a crash cannot apply a
note without recording its decision, or the reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pydicom
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from dicomnode.errors import RoutingError
from dicomnode.logs import get_logger
from dicomnode.routing.rejection_note import KEY_OBJECT_SELECTION, RejectionNote, read_note
from dicomnode.rules.matching import Decision, Evaluation
from dicomnode.store.database import Database
from dicomnode.store.handoff import cancel_pending_jobs, queue_send
from dicomnode.store.spool import Spool
from dicomnode.store.tables import InstanceRow, RejectionRow, SendItemRow, SendRow, SeriesRow

log = get_logger(__name__)

NOTE_ORIGIN = "rejection-note"  # the origin of a note's sends, beside "rule:<name>"
_CHUNK = 500  # UIDs per IN (...) clause: under SQLite's 999 bound parameters
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RejectedInstances:
    """The rejected instances a series version loads (its own and earlier versions')."""

    loaded: int = 0  # rejected instances in versions up to this one
    here: int = 0  # rejected instances of this version
    instances: int = 0  # instances of this version
    reasons: tuple[str, ...] = ()  # "113001 Rejected for Quality Reasons", ...
    notes: tuple[tuple[int, int], ...] = ()  # (series id, version) of notes rejecting `here`


@dataclass(frozen=True, slots=True)
class Screening:
    """What rejection means for one completed series version, decided before routing."""

    series_id: int
    version: int
    notes: tuple[RejectionNote, ...] = ()  # this version's own rejection notes
    note_destinations: tuple[str, ...] = ()  # where the instances they name went
    rejected: RejectedInstances = RejectedInstances()

    @property
    def is_note(self) -> bool:
        return bool(self.notes)

    @property
    def all_rejected(self) -> bool:
        return 0 < self.rejected.instances == self.rejected.here

    def restrict(self, evaluation: Evaluation) -> Evaluation:
        """The rules' evaluation, less what must not happen to this version."""
        decision = evaluation.decision
        if self.is_note:
            decision = Decision()
        elif self.all_rejected:
            decision = Decision(matched_rules=decision.matched_rules)
        elif self.rejected.loaded:
            decision = dataclasses.replace(decision, pipeline_runs=())
        return dataclasses.replace(evaluation, decision=decision)

    def unrouted(self, decision: Decision) -> bool:
        """A note is handled, not unrouted, though no rule applies to it."""
        return not decision.routed and not self.is_note

    def as_dict(self) -> dict[str, Any]:
        """What the stored routing decision says about rejection (nothing when none)."""
        if self.is_note:
            return {
                "rejection_note": {
                    "reasons": sorted({note.reason for note in self.notes}),
                    "references": sum(len(note.references) for note in self.notes),
                    "forward_to": list(self.note_destinations),
                }
            }
        if self.rejected.loaded:
            return {
                "rejected": {
                    "instances": self.rejected.loaded,
                    "of_this_version": self.rejected.here,
                    "reasons": list(self.rejected.reasons),
                    "pipelines_withheld": True,
                    "forwards_withheld": self.all_rejected,
                }
            }
        return {}


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a screening changed; logged once its transaction has committed."""

    screening: Screening
    destinations: tuple[str, ...] = ()  # note sends queued
    remembered: int = 0  # references newly remembered (received or not)
    series: tuple[tuple[int, int, tuple[int, ...]], ...] = ()  # (series, rejected, jobs)

    def log(self) -> None:
        s = self.screening
        if s.is_note:
            log.info(
                "rejection_note_routed",
                series_id=s.series_id,
                version=s.version,
                reasons=sorted({note.reason for note in s.notes}),
                references=sum(len(note.references) for note in s.notes),
                remembered=self.remembered,
                malformed=sum(note.malformed for note in s.notes),
                truncated=any(note.truncated for note in s.notes),
                forward_to=list(self.destinations),
            )
        elif s.rejected.loaded:
            log.info(
                "rejected_series_withheld",
                series_id=s.series_id,
                version=s.version,
                rejected=s.rejected.loaded,
                of_this_version=s.rejected.here,
                instances=s.rejected.instances,
                reasons=list(s.rejected.reasons),
                forwards_withheld=s.all_rejected,
                notes_following=list(self.destinations),
            )
        for series_id, rejected, jobs in self.series:
            log.info(
                "instances_rejected",
                series_id=series_id,
                rejected=rejected,
                jobs_cancelled=list(jobs),
            )


NOTHING_APPLIED = Applied(Screening(0, 0))


class Rejections:
    """Screens series versions for rejection notes and rejected instances."""

    def __init__(self, database: Database, spool: Spool) -> None:
        self._db = database
        self._spool = spool

    def screen(self, series_id: int, version: int) -> Screening:
        """Read the version's notes (if any) and what of it is rejected; writes nothing.

        Raises RoutingError when a Key Object Selection of the version cannot be read.
        """
        with self._db.reading() as session:
            rows = session.execute(
                select(InstanceRow.sop_class_uid, InstanceRow.spool_name).where(
                    InstanceRow.series_id == series_id, InstanceRow.series_version == version
                )
            ).all()
        notes = tuple(
            note
            for sop_class, name in rows
            if sop_class == KEY_OBJECT_SELECTION
            for note in [self._read(name)]
            if note is not None
        )
        with self._db.reading() as session:
            if notes:
                ids = [row[0] for row in _named_instances(session, notes)]
                return Screening(series_id, version, notes, _destinations_of(session, ids))
            return Screening(series_id, version, rejected=_rejected(session, series_id, version))

    def apply(
        self, session: Session, screening: Screening, forwarded: Sequence[str], now: datetime
    ) -> Applied:
        """Write what the screening decided, inside the routing decision's transaction.

        ``forwarded``: the destinations this version was just queued to (the notes that
        rejected some of its instances follow it there).
        """
        if screening.is_note:
            return _apply_notes(session, screening, now)
        if not screening.rejected.loaded:
            return NOTHING_APPLIED
        queued: list[str] = []
        for destination in forwarded:
            for note_series, note_version in screening.rejected.notes:
                queue_send(session, destination, note_series, note_version, NOTE_ORIGIN, now)
            if screening.rejected.notes:
                queued.append(destination)
        count = _count_rejected(session, screening.series_id)
        return Applied(screening, tuple(queued), series=((screening.series_id, count, ()),))

    def _read(self, spool_name: str) -> RejectionNote | None:
        try:
            dataset = pydicom.dcmread(self._spool.path(spool_name), stop_before_pixels=True)
            return read_note(dataset)
        except Exception as exc:
            # pydicom raises many types on a broken file (OSError, InvalidDicomError,
            # ValueError, KeyError ...): each is this version's failure, retried later.
            raise RoutingError(
                f"cannot read key object selection {spool_name}: {type(exc).__name__}: {exc}"
            ) from exc


def _apply_notes(session: Session, screening: Screening, now: datetime) -> Applied:
    remembered = 0
    for note in screening.notes:
        uids = [ref.sop_instance_uid for ref in note.references]
        known = {
            (uid, series_uid)
            for chunk in _chunks(uids)
            for uid, series_uid in session.execute(
                select(RejectionRow.sop_instance_uid, RejectionRow.series_uid).where(
                    RejectionRow.sop_instance_uid.in_(chunk)
                )
            )
        }
        for ref in note.references:
            if (ref.sop_instance_uid, ref.series_uid) in known:
                continue  # an earlier note rejected it first; its reason stays
            known.add((ref.sop_instance_uid, ref.series_uid))
            session.add(
                RejectionRow(
                    sop_instance_uid=ref.sop_instance_uid,
                    series_uid=ref.series_uid,
                    study_uid=ref.study_uid,
                    code=note.code,
                    meaning=note.meaning,
                    note_sop_instance_uid=note.sop_instance_uid,
                    note_series_id=screening.series_id,
                    note_version=screening.version,
                    noted_at=now,
                )
            )
            remembered += 1
    session.flush()
    reason = "rejected by an IOCM rejection note: " + ", ".join(
        sorted({note.reason for note in screening.notes})
    )
    affected: list[tuple[int, int, tuple[int, ...]]] = []
    for series_id, first_version in _affected_series(session, screening):
        jobs = cancel_pending_jobs(session, series_id, first_version, reason, now)
        affected.append((series_id, _count_rejected(session, series_id), tuple(jobs)))
    for destination in screening.note_destinations:
        queue_send(session, destination, screening.series_id, screening.version, NOTE_ORIGIN, now)
    return Applied(screening, screening.note_destinations, remembered, tuple(affected))


def _rejected(session: Session, series_id: int, version: int) -> RejectedInstances:
    """The rejected instances of the series up to ``version``."""
    instances = int(
        session.scalar(
            select(func.count(InstanceRow.id)).where(
                InstanceRow.series_id == series_id, InstanceRow.series_version == version
            )
        )
        or 0
    )
    rows = session.execute(
        _rejected_query(series_id).where(InstanceRow.series_version <= version)
    ).all()
    if not rows:
        return RejectedInstances(instances=instances)
    here = [row for row in rows if row.series_version == version]
    return RejectedInstances(
        loaded=len(rows),
        here=len(here),
        instances=instances,
        reasons=tuple(sorted({f"{row.code} {row.meaning}" for row in rows})),
        notes=tuple(sorted({(row.note_series_id, row.note_version) for row in here})),
    )


def _rejected_query(series_id: int) -> Any:
    """Instances of a series named by a note; the note's series UID must be theirs."""
    return (
        select(
            InstanceRow.series_version,
            RejectionRow.code,
            RejectionRow.meaning,
            RejectionRow.note_series_id,
            RejectionRow.note_version,
        )
        .join(RejectionRow, RejectionRow.sop_instance_uid == InstanceRow.sop_instance_uid)
        .join(SeriesRow, SeriesRow.id == InstanceRow.series_id)
        .where(InstanceRow.series_id == series_id, RejectionRow.series_uid == SeriesRow.series_uid)
    )


def _count_rejected(session: Session, series_id: int) -> int:
    rejected = _rejected_query(series_id).subquery()
    count = int(session.scalar(select(func.count()).select_from(rejected)) or 0)
    session.execute(update(SeriesRow).where(SeriesRow.id == series_id).values(rejected_count=count))
    return count


def _affected_series(session: Session, screening: Screening) -> list[tuple[int, int]]:
    """Received series with an instance the notes name: (series id, first such version)."""
    found: dict[int, int] = {}
    for _instance, series_id, version in _named_instances(session, screening.notes):
        found[series_id] = min(version, found.get(series_id, version))
    return sorted(found.items())


def _named_instances(
    session: Session, notes: Sequence[RejectionNote]
) -> list[tuple[int, int, int]]:
    """Received instances the notes name: (instance id, series id, version).

    An instance counts only where the note's series UID for it is its series' UID.
    """
    named: list[tuple[int, int, int]] = []
    for note in notes:
        series_of = {ref.sop_instance_uid: ref.series_uid for ref in note.references}
        for chunk in _chunks(list(series_of)):
            rows = session.execute(
                select(
                    InstanceRow.sop_instance_uid,
                    InstanceRow.id,
                    InstanceRow.series_id,
                    InstanceRow.series_version,
                    SeriesRow.series_uid,
                )
                .join(SeriesRow, SeriesRow.id == InstanceRow.series_id)
                .where(InstanceRow.sop_instance_uid.in_(chunk))
            )
            named += [
                (iid, sid, version)
                for uid, iid, sid, version, series_uid in rows
                if series_of[uid] == series_uid
            ]
    return named


def _destinations_of(session: Session, instance_ids: Sequence[int]) -> tuple[str, ...]:
    """Destinations that acknowledged these instances, or still have them queued."""
    found: set[str] = set()
    for chunk in _chunks(list(instance_ids)):
        found.update(
            session.scalars(
                select(SendRow.destination)
                .distinct()
                .join(SendItemRow, SendItemRow.send_id == SendRow.id)
                .where(
                    SendItemRow.instance_id.in_(chunk),
                    or_(
                        SendItemRow.state == "sent",
                        (SendItemRow.state == "pending")
                        & SendRow.state.in_(("pending", "sending")),
                    ),
                )
            )
        )
    return tuple(sorted(found))


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
