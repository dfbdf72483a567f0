"""The completion deadline: the earliest of the quiet, settle and max-wait clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicomnode.config import CompletionPolicy
from dicomnode.store.deadline import completion_deadline

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = CompletionPolicy(quiet_seconds=30, settle_seconds=2, max_wait_seconds=600)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_quiet_clock_runs_from_the_last_arrival() -> None:
    deadline = completion_deadline(POLICY, T0, T0 + seconds(10), None)
    assert (deadline.at, deadline.reason) == (T0 + seconds(40), "quiet")


def test_release_starts_the_shorter_settle_clock() -> None:
    deadline = completion_deadline(POLICY, T0, T0 + seconds(10), T0 + seconds(11))
    assert (deadline.at, deadline.reason) == (T0 + seconds(13), "settle")


def test_max_wait_caps_a_trickling_sender() -> None:
    deadline = completion_deadline(POLICY, T0, T0 + seconds(590), None)
    assert (deadline.at, deadline.reason) == (T0 + seconds(600), "max_wait")


def test_a_settle_longer_than_quiet_never_delays_completion() -> None:
    slow_settle = CompletionPolicy(quiet_seconds=5, settle_seconds=50, max_wait_seconds=600)
    deadline = completion_deadline(slow_settle, T0, T0, T0)
    assert deadline.reason == "quiet"
