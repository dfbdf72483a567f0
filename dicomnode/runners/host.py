"""The ModelHost: every configured model loaded once, and each call kept within limits.

``max_concurrent`` bounds the calls of a model that run at once; more wait for a slot
(the wait does not count against the time limit). ``timeout_seconds`` bounds each call:

- A runner that ``enforces_timeout`` (a python function in a child process) kills its own
  call at the limit and raises ModelTimeoutError; the slot is free at once.
- Any other runner (TensorFlow, a python function in a thread) is called in a fresh
  daemon thread. At the limit the caller gets ModelTimeoutError and the job fails, but
  Python cannot stop a thread: the call is abandoned and keeps its slot until it returns,
  so a hung model never runs more than ``max_concurrent`` calls at once. When every slot
  is held by an abandoned call, new calls fail at once ("unavailable") instead of waiting
  behind a model that may never return. TensorFlow models stay in threads all the same:
  loading takes seconds, so a model must live in the node's process to stay warm.

Either way the node keeps serving: the failure is the job's, not the node's. Whatever a
model raises becomes a RunnerError carrying the exception's type and message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.errors import ModelTimeoutError, RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import InputArray, Prediction, Runner, RunnerParams
from dicomnode.runners.envelope import InputEnvelope
from dicomnode.runners.registry import build_runner

log = get_logger(__name__)


class ModelHost:
    """Runs the models of the node's pipelines, by name."""

    def __init__(self, models: Mapping[str, RunnerParams], base_dir: Path) -> None:
        self._models = {
            name: _HostedModel(name, params, build_runner(name, params, base_dir))
            for name, params in models.items()
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._models)

    @property
    def loaded(self) -> tuple[str, ...]:
        """The models loaded so far (at start: those the rules in force name)."""
        return tuple(name for name, model in self._models.items() if model.loaded)

    def runner(self, name: str) -> Runner:
        return self._model(name).runner

    def slice_wise(self, name: str) -> bool:
        """Whether the model sees one slice at a time (``mode: slices``); else volumetric."""
        return getattr(self._model(name).params, "mode", "volume") == "slices"

    def envelope(self, name: str) -> InputEnvelope | None:
        """The inputs model ``name`` was validated on, as its configuration declares."""
        return self._model(name).params.envelope

    def load(self) -> None:
        """Load every model; one RunnerError lists each model that failed (for config check)."""
        failures = []
        for model in self._models.values():
            try:
                model.load()
            except RunnerError as exc:
                failures.append(str(exc))
        if len(failures) == 1:
            raise RunnerError(failures[0])
        if failures:
            raise RunnerError(f"{len(failures)} models failed to load:\n" + "\n".join(failures))

    def predict(
        self, name: str, array: InputArray, context: Mapping[str, Any] | None = None
    ) -> Prediction:
        """Model ``name``'s output for ``array`` (loading the model if it is not yet)."""
        model = self._model(name)
        model.load()
        data = np.asarray(array, dtype=np.float32)
        if data.ndim not in (3, 4) or 0 in data.shape:
            raise RunnerError(
                f"model {name!r}: input must be (z, y, x) or (z, y, x, c), got {data.shape}"
            )
        result = model.call(data, context or {})
        _check_output(name, data.shape, result)
        return result

    def close(self) -> None:
        for model in self._models.values():
            model.runner.close()

    def __enter__(self) -> ModelHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _model(self, name: str) -> _HostedModel:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise RunnerError(f"no model {name!r}; models: {known}")
        return model


class _HostedModel:
    """One model: its runner, its slots and the calls in flight."""

    def __init__(self, name: str, params: RunnerParams, runner: Runner) -> None:
        self.name = name
        self.params = params
        self.runner = runner
        self.slots = _Slots(name, params.max_concurrent)
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        with self._load_lock:
            if not self._loaded:
                self.runner.load()
                self._loaded = True

    def call(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        self.slots.acquire()
        if self.runner.enforces_timeout:
            try:
                return _converted(self.name, lambda: self.runner.predict(array, context))
            finally:
                self.slots.release(abandoned=False)
        call = _ThreadCall(self, array, context)
        call.start()
        return call.result(self.params.timeout_seconds)


class _ThreadCall:
    """One predict() in a daemon thread, which the caller may abandon at the limit.

    Daemon, because an abandoned call must not keep the node from exiting.
    """

    def __init__(self, model: _HostedModel, array: InputArray, context: Mapping[str, Any]):
        self._model = model
        self._array = array
        self._context = context
        self._done = threading.Event()
        self._lock = threading.Lock()  # orders "finished" against "abandoned"
        self._finished = False
        self._abandoned = False
        self._value: Prediction | None = None
        self._error: BaseException | None = None
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        thread = threading.Thread(
            target=self._run, name=f"dicomnode-model-{self._model.name}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self._model.slots.release(abandoned=False)
            raise

    def result(self, timeout: float) -> Prediction:
        self._done.wait(timeout)
        with self._lock:
            if not self._finished:
                self._abandoned = True
                self._model.slots.abandon()
                log.warning("model_timed_out", model=self._model.name, limit_seconds=timeout)
                raise ModelTimeoutError(
                    f"model {self._model.name!r} exceeded its {timeout:g} s limit"
                )
        if self._value is None:
            raise self._error or RunnerError(f"model {self._model.name!r} returned nothing")
        return self._value

    def _run(self) -> None:
        try:
            self._value = _converted(
                self._model.name, lambda: self._model.runner.predict(self._array, self._context)
            )
        except BaseException as exc:  # noqa: BLE001 - the thread's root: the caller re-raises it
            self._error = exc
        finally:
            with self._lock:
                self._finished = True
                abandoned = self._abandoned
            self._model.slots.release(abandoned=abandoned)
            self._done.set()
            if abandoned:
                log.warning(
                    "abandoned_model_call_returned",
                    model=self._model.name,
                    seconds=round(time.monotonic() - self._started, 3),
                )


class _Slots:
    """A counting semaphore that also counts the calls abandoned while holding a slot."""

    def __init__(self, name: str, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._busy = 0
        self._abandoned = 0
        self._changed = threading.Condition()

    def acquire(self) -> None:
        with self._changed:
            while self._busy >= self._limit:
                if self._abandoned >= self._limit:
                    raise RunnerError(
                        f"model {self._name!r} is unavailable: all {self._limit} of its slots "
                        "are held by calls that exceeded the time limit and have not returned"
                    )
                self._changed.wait()
            self._busy += 1

    def abandon(self) -> None:
        with self._changed:
            self._abandoned += 1
            self._changed.notify_all()  # waiters may now have to give up

    def release(self, abandoned: bool) -> None:
        with self._changed:
            self._busy -= 1
            if abandoned:
                self._abandoned -= 1
            self._changed.notify_all()


def _converted(name: str, predict: Callable[[], Prediction]) -> Prediction:
    """Run ``predict``; anything it raises becomes a RunnerError naming the model."""
    try:
        result = predict()
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(f"model {name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, np.ndarray):
        raise RunnerError(f"model {name!r} returned a {type(result).__name__}, not an array")
    return result


def _check_output(name: str, shape: tuple[int, ...], result: Prediction) -> None:
    """Per-voxel (z, y, x[, k]) on the input's grid, or a classifier's vector (k,)."""
    per_voxel = result.ndim in (3, 4) and result.shape[:3] == shape[:3]
    if not (per_voxel or result.ndim == 1):
        raise RunnerError(
            f"model {name!r} returned shape {result.shape} for input {shape}: expected "
            f"{shape[:3]} labels, {shape[:3]} + (classes,) probabilities, or (classes,)"
        )
