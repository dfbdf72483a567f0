"""The ``python`` runner: a plain function named ``"package.module:function"``.

The function is called as ``function(array, **options)``, plus ``context=...`` when it
has a parameter of that name, and returns the model output as the runner interface says.
``load`` imports it (in the node's process, also with process isolation) and binds the
options to its signature, so a wrong name or option fails ``dicomnode config check``.

``isolation: process`` (the default) runs the function in a child process per concurrent
call, the first started by ``load``, the others on demand, all kept warm. A call past its
limit kills its child, so a hung or runaway function costs one job and no capacity, and a
crash (segfault, memory killer) cannot take the node down. The price is a copy of the
array each way and a start-up of about a second for each new child; arrays and results
must pickle.
``isolation: thread`` calls it in the node's process: no copies, but a call past its limit
can only be abandoned, holding its slot until it returns.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from dicomnode.errors import RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import Concurrency, InputArray, Prediction, RunnerParams, Seconds
from dicomnode.runners.callables import REFERENCE_PATTERN, resolve_callable
from dicomnode.runners.process import ModelProcess
from dicomnode.runners.registry import register

log = get_logger(__name__)


class PythonRunnerConfig(RunnerParams):
    """``{kind: python, function: "package.module:function", options: {threshold: 2.5}}``."""

    kind: Literal["python"] = "python"
    function: str  # "package.module:attribute[.attribute]", resolved by load()
    options: Mapping[str, Any] = Field(default_factory=dict)  # keyword arguments
    isolation: Literal["process", "thread"] = "process"
    timeout_seconds: Seconds = 60.0
    max_concurrent: Concurrency = 2

    @field_validator("function")
    @classmethod
    def _is_reference(cls, value: str) -> str:
        if not re.match(REFERENCE_PATTERN, value):
            raise ValueError(f"must name a function as 'package.module:function', got {value!r}")
        return value


@register(PythonRunnerConfig)
class PythonRunner:
    """A Python function, called in a warm child process or in the calling thread."""

    def __init__(self, name: str, params: PythonRunnerConfig, base_dir: Path) -> None:
        self.name = name
        self.params = params
        self._function: Callable[..., Any] | None = None
        self._passes_context = False
        self._idle: list[ModelProcess] = []  # warm children waiting for a call
        self._lock = threading.Lock()
        self._closed = False

    @property
    def enforces_timeout(self) -> bool:
        return self.params.isolation == "process"

    def load(self) -> None:
        if self._function is not None:
            return
        function = resolve_callable(self.params.function)
        self._passes_context = self._check_signature(function)
        if self.params.isolation == "process":
            # The first child starts now, so the first job does not wait for it, and an
            # import that works only in the node's interpreter fails here, not in a job.
            self._checkin(ModelProcess.start(self.name, self.params.function))
        self._function = function
        log.info(
            "model_loaded",
            model=self.name,
            kind="python",
            function=self.params.function,
            isolation=self.params.isolation,
        )

    def predict(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        if self._function is None:
            raise RunnerError(f"model {self.name!r} is not loaded")
        kwargs = dict(self.params.options)
        if self._passes_context:
            kwargs["context"] = dict(context)
        if self.params.isolation == "thread":
            return np.asarray(self._function(array, **kwargs))
        process = self._checkout()
        try:
            return process.call(array, kwargs, self.params.timeout_seconds)
        finally:
            self._checkin(process)  # keeps it warm unless it was stopped or died

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for process in idle:
            process.stop()

    def _check_signature(self, function: Callable[..., Any]) -> bool:
        """Whether it takes ``context``; RunnerError when the options do not fit it."""
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # some built-ins have no signature to inspect
            return False
        passes_context = "context" in signature.parameters
        extra: dict[str, Any] = {"context": {}} if passes_context else {}
        try:
            signature.bind(np.zeros((1, 1, 1), np.float32), **self.params.options, **extra)
        except TypeError as exc:
            raise RunnerError(
                f"model {self.name!r}: {self.params.function} cannot be called with "
                f"options {sorted(self.params.options)}: {exc}"
            ) from exc
        return passes_context

    def _checkout(self) -> ModelProcess:
        with self._lock:
            if self._closed:
                raise RunnerError(f"model {self.name!r} is closed")
            while self._idle:
                process = self._idle.pop()
                if process.alive:
                    return process
                process.stop()
        return ModelProcess.start(self.name, self.params.function)

    def _checkin(self, process: ModelProcess) -> None:
        with self._lock:
            if not self._closed and process.alive:
                self._idle.append(process)
                return
        process.stop()
