"""The series' transitions, without a database: what one more instance changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicomnode.config import CompletionPolicy
from dicomnode.store.header import InstanceHeader
from dicomnode.store.series_state import (
    MAX_DISTINCT_VALUES,
    arrival,
    deadline_of,
    merge_attributes,
    new_series,
    reopened,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
POLICY = CompletionPolicy(quiet_seconds=30, settle_seconds=2, max_wait_seconds=3600)


def _header(**attributes: object) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4.1",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        modality="CT",
        attributes=dict(attributes),  # type: ignore[arg-type]
    )


def test_a_new_series_receives_version_one_and_counts_nothing_yet() -> None:
    state = new_series(_header(SeriesDescription="CHEST", BodyPartExamined=""), T0)
    assert state["version"] == 1 and state["state"] == "receiving"
    assert state["instance_count"] == 0 and state["attributes"] == {}
    assert state["description"] == "CHEST"
    assert state["body_part"] is None  # empty text is no value


def test_an_instance_counts_moves_the_clock_and_collects_distinct_values() -> None:
    state = new_series(_header(), T0)
    later = T0 + timedelta(seconds=5)
    changes = arrival(state, {"Modality": "CT"}, later, 7, counted=True)
    assert changes["instance_count"] == 1
    assert changes["attributes"] == {"Modality": ["CT"]}
    assert changes["last_arrival_at"] == later and changes["last_association_id"] == 7
    assert changes["released_at"] is None
    # A re-sent instance (replaced, not counted) changes no count.
    assert "instance_count" not in arrival(state, {}, later, None, counted=False)


def test_attributes_keep_distinct_values_up_to_the_limit_and_copy_only_when_new() -> None:
    known = {"Modality": ["CT"]}
    assert merge_attributes(known, {"Modality": "CT"}) is known
    values = {"SeriesNumber": [str(n) for n in range(MAX_DISTINCT_VALUES)]}
    assert merge_attributes(values, {"SeriesNumber": "999"}) is values
    merged = merge_attributes(known, {"Modality": "PT"})
    assert merged == {"Modality": ["CT", "PT"]} and known == {"Modality": ["CT"]}


def test_only_a_complete_series_opens_a_new_version() -> None:
    state = new_series(_header(), T0)
    assert reopened(state, T0) == {}
    state["state"] = "complete"
    later = T0 + timedelta(hours=1)
    assert reopened(state, later) == {
        "version": 2,
        "version_started_at": later,
        "state": "receiving",
        "completed_at": None,
        "purged_at": None,
    }


def test_the_deadline_is_the_earliest_clock() -> None:
    state = new_series(_header(), T0)
    assert deadline_of(state, lambda _m: POLICY).at == T0 + timedelta(seconds=30)
    state["released_at"] = T0 + timedelta(seconds=1)
    deadline = deadline_of(state, lambda _m: POLICY)
    assert (deadline.at, deadline.reason) == (T0 + timedelta(seconds=3), "settle")
