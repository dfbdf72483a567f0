"""The shadow report: what a model in shadow found, beside the live model and the labels.

One row per series version with a shadow job (docs/shadow.md): when it ran, its pipeline,
what it found (findings present and their probability, or regions and their volumes),
where its results would have gone, and two comparisons:

- with the **live** model: the latest done job of another, non-shadow pipeline on the
  same series version (the model the shadow one would replace): agree or disagree per
  finding both name, and the volume difference per region both name;
- with **labels** as they arrive (:mod:`.shadow_labels`): a series is predicted
  positive when the finding asked for (any finding, by default) is present; the counts
  of true and false positives and negatives give sensitivity, specificity and PPV so far.

``dicomnode shadow report`` and the admin API's ``/api/shadow`` both call
:func:`shadow_report`, so the page and the command say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from dicomnode.datasets.shadow_labels import Labels
from dicomnode.store.database import Database
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobRow, SeriesRow

# The accession number of a series (id), read where the index does not keep it.
AccessionOf = Callable[[int], str | None]


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding of a result: a classifier's finding or a segment (region)."""

    name: str
    present: bool
    probability: float | None = None
    volume_ml: float | None = None


@dataclass(frozen=True, slots=True)
class Agreement:
    """A shadow finding beside the live model's finding of the same name."""

    name: str
    agree: bool
    volume_difference_ml: float | None = None  # shadow minus live, for regions


@dataclass(frozen=True, slots=True)
class LiveComparison:
    job_id: int
    pipeline: str
    findings: tuple[Agreement, ...]

    @property
    def agree(self) -> bool:
        return all(item.agree for item in self.findings)


@dataclass(frozen=True, slots=True)
class ShadowRow:
    job_id: int
    series_uid: str
    series_version: int
    rule: str
    pipeline: str
    state: str
    finished_at: datetime | None
    would_send_to: tuple[str, ...]
    findings: tuple[Finding, ...]
    predicted: bool | None  # the finding (or any) present; None when the job is not done
    live: LiveComparison | None = None
    label: bool | None = None  # None: no label (yet)


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts over the labelled, done rows, and what they give."""

    true_positive: int = 0
    false_positive: int = 0
    true_negative: int = 0
    false_negative: int = 0
    unlabelled: int = 0

    @property
    def labelled(self) -> int:
        return self.true_positive + self.false_positive + self.true_negative + self.false_negative

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.true_positive, self.true_positive + self.false_negative)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.true_negative, self.true_negative + self.false_positive)

    @property
    def ppv(self) -> float | None:
        return _ratio(self.true_positive, self.true_positive + self.false_positive)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "labelled": self.labelled,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "ppv": self.ppv,
        }


@dataclass(frozen=True, slots=True)
class ShadowReport:
    rows: tuple[ShadowRow, ...]
    finding: str | None  # what "predicted positive" means: this finding, or any
    labels: str | None = None  # the labels' identifying column, when labels were given
    confusion: Confusion | None = None
    live_agreement: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; the labels' identifiers never appear (only the series UIDs)."""
        return {
            "finding": self.finding,
            "labels_column": self.labels,
            "rows": [_row_dict(row) for row in self.rows],
            "confusion": None if self.confusion is None else self.confusion.as_dict(),
            "live_agreement": dict(self.live_agreement),
        }


def shadow_report(
    database: Database,
    *,
    pipeline: str | None = None,
    labels: Labels | None = None,
    finding: str | None = None,
    accession_of: AccessionOf | None = None,
    limit: int = 1000,
) -> ShadowReport:
    """The shadow jobs (newest first, at most ``limit``), each compared as the module says."""
    with database.reading() as session:
        query = (
            select(JobRow, SeriesRow.series_uid, SeriesRow.study_uid)
            .join(SeriesRow, SeriesRow.id == JobRow.series_id)
            .where(JobRow.shadow.is_(True))
            .order_by(JobRow.id.desc())
            .limit(limit)
        )
        if pipeline is not None:
            query = query.where(JobRow.pipeline == pipeline)
        shadow = list(session.execute(query))
        series_ids = {job.series_id for job, _uid, _study in shadow}
        live: dict[tuple[int, int], list[JobRow]] = {}
        if series_ids:
            for row in session.scalars(
                select(JobRow)
                .where(
                    JobRow.series_id.in_(series_ids),
                    JobRow.shadow.is_(False),
                    JobRow.state == "done",
                )
                .order_by(JobRow.id.desc())
            ):
                live.setdefault((row.series_id, row.series_version), []).append(row)
        rows = []
        for job, series_uid, study_uid in shadow:
            findings = findings_of(job.timeline.get("summary") or {})
            done = job.state == "done"
            candidates = [
                r for r in live.get((job.series_id, job.series_version), [])
                if r.pipeline != job.pipeline
            ]  # fmt: skip
            label = None
            if labels is not None:
                label = labels.get(_identifier(labels, job, series_uid, study_uid, accession_of))
            rows.append(
                ShadowRow(
                    job_id=job.id,
                    series_uid=series_uid,
                    series_version=job.series_version,
                    rule=job.rule,
                    pipeline=job.pipeline,
                    state=job.state,
                    finished_at=job.finished_at,
                    would_send_to=tuple(job.send_to.get("destinations", [])),
                    findings=findings,
                    predicted=_predicted(findings, finding) if done else None,
                    live=_compare(findings, candidates[0]) if done and candidates else None,
                    label=label,
                )
            )
    return ShadowReport(
        tuple(rows),
        finding,
        labels.column if labels is not None else None,
        _confusion(rows) if labels is not None else None,
        _agreement(rows),
    )


def findings_of(summary: Mapping[str, Any]) -> tuple[Finding, ...]:
    """A job's result summary (as the engine writes it) as findings."""
    found = [
        Finding(str(f["finding"]), bool(f["present"]), probability=float(f["probability"]))
        for f in summary.get("findings", [])
    ]
    found.extend(
        Finding(str(r["name"]), float(r["volume_ml"]) > 0, volume_ml=float(r["volume_ml"]))
        for r in summary.get("regions", [])
    )
    return tuple(found)


def _predicted(findings: tuple[Finding, ...], wanted: str | None) -> bool:
    if wanted is None:
        return any(f.present for f in findings)
    return any(f.present for f in findings if f.name == wanted)


def _compare(findings: tuple[Finding, ...], live: JobRow) -> LiveComparison:
    theirs = {f.name: f for f in findings_of(live.timeline.get("summary") or {})}
    agreements = []
    for ours in findings:
        other = theirs.get(ours.name)
        if other is None:
            continue
        difference = None
        if ours.volume_ml is not None and other.volume_ml is not None:
            difference = round(ours.volume_ml - other.volume_ml, 3)
        agreements.append(Agreement(ours.name, ours.present == other.present, difference))
    if not agreements and findings and theirs:
        # No finding named alike (another model's vocabulary): compare "anything found".
        ours_any = any(f.present for f in findings)
        theirs_any = any(f.present for f in theirs.values())
        agreements.append(Agreement("(any finding)", ours_any == theirs_any))
    return LiveComparison(live.id, live.pipeline, tuple(agreements))


def _identifier(
    labels: Labels,
    job: JobRow,
    series_uid: str,
    study_uid: str,
    accession_of: AccessionOf | None,
) -> str | None:
    if labels.key == "series":
        return series_uid
    if labels.key == "study":
        return study_uid
    return accession_of(job.series_id) if accession_of is not None else None


def _confusion(rows: list[ShadowRow]) -> Confusion:
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "none": 0}
    for row in rows:
        if row.predicted is None:
            continue
        if row.label is None:
            counts["none"] += 1
        elif row.predicted:
            counts["tp" if row.label else "fp"] += 1
        else:
            counts["fn" if row.label else "tn"] += 1
    return Confusion(counts["tp"], counts["fp"], counts["tn"], counts["fn"], counts["none"])


def _agreement(rows: list[ShadowRow]) -> dict[str, int]:
    compared = [row.live for row in rows if row.live is not None]
    agree = sum(1 for live in compared if live.agree)
    return {"compared": len(compared), "agree": agree, "disagree": len(compared) - agree}


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else round(numerator / denominator, 4)


def _row_dict(row: ShadowRow) -> dict[str, Any]:
    data = asdict(row)
    data["finished_at"] = row.finished_at.isoformat() if row.finished_at else None
    data["would_send_to"] = list(row.would_send_to)
    data["findings"] = [asdict(f) for f in row.findings]
    if row.live is not None:
        data["live"] = {**asdict(row.live), "agree": row.live.agree}
    return data


def accession_reader(index: Index, spool: Spool) -> AccessionOf:
    """Reads a series' AccessionNumber from its first spooled instance (not indexed)."""

    def read(series_id: int) -> str | None:
        for row in index.instances_of(series_id):
            try:
                header = pydicom.dcmread(
                    spool.path(row.spool_name),
                    stop_before_pixels=True,
                    specific_tags=["AccessionNumber"],
                )
            except (OSError, ValueError, InvalidDicomError):
                continue  # another instance of the series may be readable
            value = header.get("AccessionNumber")
            return str(value).strip() or None if value is not None else None
        return None

    return read
