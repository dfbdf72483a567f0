"""Functions the python-runner tests name as ``"sample_models:NAME"``.

A module of its own (not a test module) because children spawned by the process isolation
import it: pytest puts this folder on ``sys.path`` and ``spawn`` passes ``sys.path`` on.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

NOT_A_FUNCTION = 42


def double(array: Array, factor: float = 2.0) -> Array:
    return array * factor


def context_marker(array: Array, context: dict[str, Any]) -> Array:
    """A classifier-shaped (k,) answer that shows the context arrived."""
    return np.array([float(context["marker"]), float(array.size)])


def sleep(array: Array, context: dict[str, Any]) -> Array:
    """Sleep for ``context["seconds"]`` (per call, so one runner can be slow, then fast)."""
    time.sleep(float(context.get("seconds", 0.0)))
    return array


def interval(array: Array, seconds: float) -> Array:
    """Sleep and return (start, end) in wall-clock seconds, comparable across processes."""
    start = time.time()
    time.sleep(seconds)
    return np.array([start, time.time()])


def fail(array: Array) -> Array:
    raise ValueError("synthetic failure inside the model")


def crash(array: Array) -> Array:
    """Die without a Python exception, as a segfault or the memory killer would."""
    os._exit(3)


def wrong_shape(array: Array) -> Array:
    first: Array = array[0]
    return first
