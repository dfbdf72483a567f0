"""The python runner: "module:function" resolved at load, called with options and context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.errors import RunnerError
from dicomnode.runners import ModelHost, parse_runner_config, resolve_callable

ISOLATIONS = ["thread", "process"]


def host_of(tmp_path: Path, **runner: Any) -> ModelHost:
    return ModelHost({"model": parse_runner_config({"kind": "python", **runner})}, tmp_path)


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[ModelHost]]:
    """Hosts made in a test, closed after it (process isolation leaves children)."""
    made: list[ModelHost] = []
    yield made
    for host in made:
        host.close()


def test_resolves_a_module_function() -> None:
    assert resolve_callable("sample_models:double")(np.ones(2)).tolist() == [2.0, 2.0]
    assert resolve_callable("os.path:join")("a", "b") == "a/b"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("sample_models:missing", "module 'sample_models' has no attribute 'missing'"),
        ("sample_models:NOT_A_FUNCTION", "is a int, not a function"),
        ("sample_models.double", "not of the form 'package.module:function'"),
    ],
)
def test_a_wrong_reference_says_what_is_missing(reference: str, message: str) -> None:
    with pytest.raises(RunnerError, match=message):
        resolve_callable(reference)


def test_a_missing_function_fails_load_naming_it(tmp_path: Path) -> None:
    host = host_of(tmp_path, function="sample_models:does_not_exist")
    with pytest.raises(RunnerError, match="has no attribute 'does_not_exist'"):
        host.load()


def test_options_that_do_not_fit_the_function_fail_load(tmp_path: Path) -> None:
    host = host_of(tmp_path, function="sample_models:double", options={"factr": 3})
    with pytest.raises(
        RunnerError, match=r"model 'model'.*cannot be called with options \['factr'\]"
    ):
        host.load()


def test_calls_the_function_with_its_options(
    tmp_path: Path, isolation: str, hosts: list[ModelHost]
) -> None:
    host = host_of(
        tmp_path, function="sample_models:double", options={"factor": 3.0}, isolation=isolation
    )
    hosts.append(host)
    host.load()
    array = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert np.array_equal(host.predict("model", array), array * 3)
    assert np.array_equal(host.predict("model", array), array * 3)  # the warm child again


def test_passes_the_context_to_a_function_that_asks_for_it(
    tmp_path: Path, isolation: str, hosts: list[ModelHost]
) -> None:
    host = host_of(tmp_path, function="sample_models:context_marker", isolation=isolation)
    hosts.append(host)
    result = host.predict("model", np.zeros((1, 2, 3), np.float32), {"marker": 7})
    assert result.tolist() == [7.0, 6.0]


def test_the_pet_reference_threshold(tmp_path: Path) -> None:
    host = host_of(
        tmp_path,
        function="dicomnode.models.pet_suv_reference:threshold",
        isolation="thread",
    )
    suv = np.array([[[0.0, 2.49, 2.5, 9.0]]], np.float32)
    labels = host.predict("model", suv)
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[[0, 0, 1, 1]]]
