"""A series' state as the index keeps it, and its transitions as pure functions.

``SeriesState`` is the series row as a typed mapping: ``record_instance`` runs once per
received instance, and a plain dict (what SQLAlchemy Core returns, what is cached
between instances) costs nothing to build, where an object per row would. The
transitions say what one more instance does to a series (a new version when it had
completed, the arrival clock, the routing attributes) and return the columns to write;
they touch no database, so they are tested on their own (tests/store/test_series_state.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict

from dicomnode.config import CompletionPolicy
from dicomnode.store.deadline import Deadline, completion_deadline
from dicomnode.store.header import InstanceHeader, JSONValue

PolicyLookup = Callable[[str | None], CompletionPolicy]
MAX_DISTINCT_VALUES = 16  # values kept per routing attribute


class SeriesState(TypedDict, total=False):
    """The ``series`` row's columns that receiving reads and writes."""

    id: int
    study_uid: str
    series_uid: str
    modality: str | None
    description: str | None
    body_part: str | None
    attributes: dict[str, list[JSONValue]]  # keyword -> distinct values seen
    instance_count: int
    first_arrival_at: datetime
    last_arrival_at: datetime
    version: int
    version_started_at: datetime
    state: str  # receiving | complete
    origin: str
    released_at: datetime | None
    completed_at: datetime | None
    deadline_at: datetime | None
    deadline_reason: str | None
    last_association_id: int | None


def new_series(header: InstanceHeader, now: datetime) -> SeriesState:
    """A series' first instance: version 1, receiving, nothing counted yet."""
    attrs = header.attributes
    return {
        "study_uid": header.study_uid,
        "series_uid": header.series_uid,
        "modality": header.modality,
        "description": text_or_none(attrs.get("SeriesDescription")),
        "body_part": text_or_none(attrs.get("BodyPartExamined")),
        "attributes": {},
        "instance_count": 0,
        "first_arrival_at": now,
        "last_arrival_at": now,
        "version": 1,
        "version_started_at": now,
        "state": "receiving",
        "origin": "received",
        "released_at": None,
    }


def reopened(series: SeriesState, now: datetime) -> dict[str, Any]:
    """A complete series that receives more becomes a new version; nothing otherwise.

    Its files are live again: ``purged_at`` (retention removed the earlier version's
    files) is cleared, so retention purges the new version in its turn and index pruning
    never deletes the rows of instances that arrived after the purge.
    """
    if series["state"] != "complete":
        return {}
    return {
        "version": series["version"] + 1,
        "version_started_at": now,
        "state": "receiving",
        "completed_at": None,
        "purged_at": None,
    }


def arrival(
    series: SeriesState,
    attributes: dict[str, JSONValue],
    now: datetime,
    association_id: int | None,
    counted: bool,
) -> dict[str, Any]:
    """What one instance's arrival changes (a ``counted`` one is new to the series)."""
    changes: dict[str, Any] = {}
    if counted:
        changes["instance_count"] = series["instance_count"] + 1
    merged = merge_attributes(series["attributes"], attributes)
    if merged is not series["attributes"]:
        changes["attributes"] = merged
    changes.update(last_arrival_at=now, last_association_id=association_id, released_at=None)
    return changes


def deadline_of(series: SeriesState, policy: PolicyLookup) -> Deadline:
    """When the series completes unless more arrives (docs: store.deadline)."""
    return completion_deadline(
        policy(series["modality"]),
        series["version_started_at"],
        series["last_arrival_at"],
        series["released_at"],
    )


def merge_attributes(
    known: dict[str, Any], seen: dict[str, JSONValue]
) -> dict[str, list[JSONValue]]:
    """Keep each attribute's distinct values, so rules can tell uniform from mixed.

    Returns ``known`` itself when nothing is new (most instances of a series), and
    copies it only on the first new value.
    """
    merged: dict[str, list[JSONValue]] | None = None
    for keyword, value in seen.items():
        values = (known if merged is None else merged).get(keyword)
        if values is not None and (value in values or len(values) >= MAX_DISTINCT_VALUES):
            continue
        if merged is None:
            merged = {k: list(v) for k, v in known.items()}
        merged.setdefault(keyword, []).append(value)
    if merged is not None:
        return merged
    return known if known else {}


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
