"""The ModelHost: failures, time limits and concurrency, for each way of running a model.

Models here are the python runner's functions in ``sample_models``; ``process`` runs them
in a killable child, ``thread`` in an abandonable thread, which is also how TensorFlow
models run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.errors import ModelTimeoutError, RunnerError
from dicomnode.runners import ModelHost, parse_runner_config

VOLUME = np.zeros((2, 3, 4), np.float32)

HostFactory = Callable[..., ModelHost]


@pytest.fixture(params=["thread", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[HostFactory]:
    """``make_host(function=..., **params)``: one python model called "model", closed after."""
    made: list[ModelHost] = []

    def make(**params: Any) -> ModelHost:
        config = parse_runner_config({"kind": "python", **params})
        host = ModelHost({"model": config}, tmp_path)
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


def test_a_model_that_raises_fails_with_its_reason(make_host: HostFactory, isolation: str) -> None:
    host = make_host(function="sample_models:fail", isolation=isolation)
    with pytest.raises(
        RunnerError, match="model 'model' failed: ValueError: synthetic failure inside the model"
    ):
        host.predict("model", VOLUME)


def test_a_model_past_its_limit_times_out_and_the_next_call_is_served(
    make_host: HostFactory,
) -> None:
    """In a process the stuck call is killed: its slot is free at once."""
    host = make_host(
        function="sample_models:sleep", isolation="process", timeout_seconds=1, max_concurrent=1
    )
    host.predict("model", VOLUME)  # start the child outside the timed call
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError, match="model 'model' exceeded its 1 s limit"):
        host.predict("model", VOLUME, {"seconds": 60})
    assert time.monotonic() - started < 10
    assert np.array_equal(host.predict("model", VOLUME, {"seconds": 0}), VOLUME)


def test_a_thread_past_its_limit_keeps_its_slot_until_it_returns(make_host: HostFactory) -> None:
    """A thread cannot be stopped: with every slot held by a stuck call, calls fail at once."""
    host = make_host(
        function="sample_models:sleep", isolation="thread", timeout_seconds=0.3, max_concurrent=1
    )
    with pytest.raises(ModelTimeoutError, match=r"model 'model' exceeded its 0\.3 s limit"):
        host.predict("model", VOLUME, {"seconds": 1.5})
    with pytest.raises(RunnerError, match="model 'model' is unavailable") as caught:
        host.predict("model", VOLUME, {"seconds": 0})
    assert not isinstance(caught.value, ModelTimeoutError)
    deadline = time.monotonic() + 30
    while True:  # until the abandoned call returns (after 1.5 s) and frees its slot
        try:
            result = host.predict("model", VOLUME, {"seconds": 0})
            break
        except RunnerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert np.array_equal(result, VOLUME)


def test_a_thread_past_its_limit_leaves_the_other_slots_serving(make_host: HostFactory) -> None:
    host = make_host(
        function="sample_models:sleep", isolation="thread", timeout_seconds=0.3, max_concurrent=2
    )
    with pytest.raises(ModelTimeoutError):
        host.predict("model", VOLUME, {"seconds": 1.5})
    assert np.array_equal(host.predict("model", VOLUME, {"seconds": 0}), VOLUME)


def test_a_model_process_that_dies_fails_the_call_and_a_new_one_serves(
    make_host: HostFactory,
) -> None:
    host = make_host(function="sample_models:crash", isolation="process")
    with pytest.raises(RunnerError, match=r"its process died \(exit code 3\)"):
        host.predict("model", VOLUME)
    with pytest.raises(RunnerError, match=r"its process died \(exit code 3\)"):
        host.predict("model", VOLUME)


@pytest.mark.parametrize(("limit", "overlap"), [(1, False), (2, True)])
def test_max_concurrent_bounds_the_calls_that_run_at_once(
    make_host: HostFactory, isolation: str, limit: int, overlap: bool
) -> None:
    host = make_host(
        function="sample_models:interval",
        options={"seconds": 0.5},
        isolation=isolation,
        max_concurrent=limit,
    )
    host.load()

    def two_calls_at_once() -> list[Any]:
        intervals: list[Any] = []

        def call() -> None:
            intervals.append(host.predict("model", VOLUME))

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(intervals) == 2
        return sorted(intervals, key=lambda pair: float(pair[0]))

    two_calls_at_once()  # warm up: a second child process starts only when needed
    first, second = two_calls_at_once()
    assert bool(second[0] < first[1]) is overlap


def test_an_output_of_the_wrong_shape_is_refused(make_host: HostFactory) -> None:
    host = make_host(function="sample_models:wrong_shape", isolation="thread")
    with pytest.raises(RunnerError, match=r"returned shape \(3, 4\) for input \(2, 3, 4\)"):
        host.predict("model", VOLUME)


def test_an_input_of_the_wrong_rank_is_refused(make_host: HostFactory) -> None:
    host = make_host(function="sample_models:double", isolation="thread")
    with pytest.raises(RunnerError, match=r"input must be \(z, y, x\) or \(z, y, x, c\)"):
        host.predict("model", np.zeros((3, 4), np.float32))


def test_an_unknown_model_is_named(make_host: HostFactory) -> None:
    host = make_host(function="sample_models:double")
    with pytest.raises(RunnerError, match="no model 'other'; models: model"):
        host.predict("other", VOLUME)


def test_load_reports_every_model_that_fails(tmp_path: Path) -> None:
    configs = {
        "good": parse_runner_config({"kind": "python", "function": "sample_models:double"}),
        "typo": parse_runner_config({"kind": "python", "function": "sample_models:dubble"}),
        "gone": parse_runner_config({"kind": "tensorflow", "model": "gone.keras"}),
    }
    with ModelHost(configs, tmp_path) as host, pytest.raises(RunnerError) as caught:
        host.load()
    message = str(caught.value)
    assert message.startswith("2 models failed to load:")
    assert "no attribute 'dubble'" in message
    assert f"model file {tmp_path / 'gone.keras'} does not exist" in message
