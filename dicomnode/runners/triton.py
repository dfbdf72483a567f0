"""The ``triton`` runner: a model served by NVIDIA Triton (or any KServe V2 server), over HTTP.

For sites whose GPUs sit in an inference server: the node sends each batch to
``POST /v2/models/NAME[/versions/N]/infer`` through ``tritonclient.http`` (an extra:
``dicomnode[triton]``, imported only when a ``triton`` model loads) and gets the output
back in binary form. Feeding (``mode``, ``batch_size``, ``input_channels_last``,
``output_labels``) is the tensorflow runner's, see :mod:`dicomnode.runners.batches`; the
argmax of ``output_labels`` runs here, on the scores the server returns.

``load`` asks the server for the model's metadata and configuration, so an unreachable
server, an unknown model, a wrong tensor name or a ``batch_size`` above the model's
``max_batch_size`` fails ``dicomnode config check`` (and the start of a node whose rules
use the model), naming the key.

Each request has its own limit, ``request_timeout_seconds`` (connecting and each read).
A refused or broken connection and an HTTP 5xx answer are retried ``retries`` times,
after ``retry_backoff_seconds``, doubled each time (``triton_request_retried``); a request
that runs past its limit, or a 4xx answer, is not retried (a slow model would only get
more work). Then the call raises RunnerError and the job fails with the reason. The
ModelHost's ``timeout_seconds`` still bounds the whole call; the thread it abandons then
ends by itself within ``(retries + 1) * request_timeout_seconds`` plus the backoff.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field, field_validator

from dicomnode.errors import RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import Concurrency, InputArray, Prediction, Seconds
from dicomnode.runners.batches import (
    BatchedRunnerParams,
    Dimension,
    check_channels,
    check_input_rank,
    feed,
    pick_tensor,
)
from dicomnode.runners.registry import register

log = get_logger(__name__)

T = TypeVar("T")

# KServe V2 tensor types the runner feeds: the pipeline's float32, cast where asked.
_FLOAT_TYPES: Mapping[str, type[np.floating[Any]]] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
}


class TritonRunnerConfig(BatchedRunnerParams):
    """``{kind: triton, url: "gpu1:8000", model_name: ct-tissue, mode: slices}``."""

    kind: Literal["triton"] = "triton"
    # The server's HTTP endpoint: "host:port", "http://host:port" or "https://host:port",
    # with an optional base path.
    url: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    model_version: Annotated[str, Field(pattern=r"^\d*$")] = ""  # "": the server's choice
    input: str | None = None  # input tensor name; needed when the model has several
    output: str | None = None  # output tensor name; needed when the model has several
    request_timeout_seconds: Seconds = 60.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_backoff_seconds: Annotated[float, Field(ge=0, le=60)] = 0.5
    timeout_seconds: Seconds = 600.0
    max_concurrent: Concurrency = 1

    @field_validator("url")
    @classmethod
    def _is_endpoint(cls, value: str) -> str:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"must be http:// or https://, got {parts.scheme}://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if not parts.hostname or port is None or parts.query or parts.fragment:
            raise ValueError(f"must be host:port[/base path], got {value!r}")
        return value

    @property
    def endpoint(self) -> tuple[str, bool]:
        """``host:port[/path]`` as tritonclient takes it, and whether it is https."""
        secure = self.url.startswith("https://")
        return self.url.split("://", 1)[-1].rstrip("/"), secure


@dataclass(frozen=True, slots=True)
class _Model:
    input_name: str
    output_name: str
    datatype: str
    input_shape: tuple[Dimension, ...]


@register(TritonRunnerConfig)
class TritonRunner:
    """A model on a Triton server, fed in batches over KServe V2 HTTP."""

    enforces_timeout = False

    def __init__(self, name: str, params: TritonRunnerConfig, base_dir: Path) -> None:
        self.name = name
        self.params = params
        self._model: _Model | None = None
        self._requests = 0
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        version = f" version {self.params.model_version}" if self.params.model_version else ""
        return f"{self.params.model_name!r}{version} on Triton at {self.params.url}"

    def load(self) -> None:
        if self._model is not None:
            return
        started = time.monotonic()
        module = _tritonclient(self.name)
        params = self.params
        try:
            with self._client(module) as client:
                metadata = self._retrying(
                    "metadata",
                    lambda: client.get_model_metadata(params.model_name, params.model_version),
                )
                config = self._retrying(
                    "config",
                    lambda: client.get_model_config(params.model_name, params.model_version),
                )
        finally:
            _drop_gevent_hub()
        try:
            model = self._describe(metadata, config)
        except RunnerError as exc:
            raise RunnerError(f"model {self.name!r}: {self.where}: {exc}") from None
        check_input_rank(self.name, params, self.where, model.input_shape)
        self._model = model
        log.info(
            "model_loaded",
            model=self.name,
            kind="triton",
            url=params.url,
            triton_model=params.model_name,
            version=params.model_version or None,
            mode=params.mode,
            seconds=round(time.monotonic() - started, 3),
        )

    def predict(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        model = self._model
        if model is None:
            raise RunnerError(f"model {self.name!r} is not loaded")
        channels = array.shape[-1] if array.ndim == 4 else 1
        check_channels(self.name, self.params, model.input_shape, channels)
        module = _tritonclient(self.name)
        # tritonclient's clients are not thread-safe: one per call, its connection kept
        # for the call's batches.
        try:
            with self._client(module) as client:
                return self._predict(module, client, model, array)
        finally:
            _drop_gevent_hub()

    def _predict(self, module: Any, client: Any, model: _Model, array: InputArray) -> Prediction:
        dtype = _FLOAT_TYPES[model.datatype]

        def forward(batch: InputArray) -> Prediction:
            request = module.InferInput(model.input_name, list(batch.shape), model.datatype)
            request.set_data_from_numpy(batch.astype(dtype, copy=False), binary_data=True)
            wanted = module.InferRequestedOutput(model.output_name, binary_data=True)
            result = self._retrying(
                "infer",
                lambda: client.infer(
                    self.params.model_name,
                    [request],
                    model_version=self.params.model_version,
                    outputs=[wanted],
                    request_id=self._request_id(),
                ),
            )
            output = result.as_numpy(model.output_name)
            if output is None:
                raise RunnerError(f"{self.where} returned no {model.output_name!r}")
            return np.asarray(output)

        return feed(self.name, self.params, array, forward)

    def close(self) -> None:
        self._model = None

    def _client(self, module: Any) -> Any:
        address, secure = self.params.endpoint
        limit = self.params.request_timeout_seconds
        return module.InferenceServerClient(
            address, connection_timeout=limit, network_timeout=limit, ssl=secure
        )

    def _request_id(self) -> str:
        with self._lock:
            self._requests += 1
            return f"{self.name}-{self._requests}"

    def _retrying(self, what: str, request: Callable[[], T]) -> T:
        """``request()``, retried on connection errors and 5xx; RunnerError at the end."""
        params = self.params
        attempts = params.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return request()
            except TimeoutError as exc:
                raise RunnerError(
                    f"model {self.name!r}: {self.where} did not answer the {what} request "
                    f"within {params.request_timeout_seconds:g} s"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                retry = True
            except Exception as exc:
                status = _status(exc)
                if status is None:
                    raise
                reason = str(exc)
                retry = status.startswith("5")
            if not retry or attempt == attempts:
                tried = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise RunnerError(
                    f"model {self.name!r}: {self.where}: {what} failed{tried}: {reason}"
                )
            delay = params.retry_backoff_seconds * 2 ** (attempt - 1)
            log.warning(
                "triton_request_retried",
                model=self.name,
                request=what,
                attempt=attempt,
                error=reason,
                delay_seconds=delay,
            )
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _describe(self, metadata: Mapping[str, Any], config: Mapping[str, Any]) -> _Model:
        """The tensors the runner uses, checked against the server's description."""
        inputs = {entry["name"]: entry for entry in metadata.get("inputs", [])}
        outputs = [entry["name"] for entry in metadata.get("outputs", [])]
        input_name = pick_tensor("input", list(inputs), self.params.input)
        output_name = pick_tensor("output", outputs, self.params.output)
        entry = inputs[input_name]
        datatype = str(entry.get("datatype"))
        if datatype not in _FLOAT_TYPES:
            raise RunnerError(f"input {input_name!r} is {datatype}; the runner feeds floats")
        shape = tuple(d if d >= 0 else None for d in (int(x) for x in entry.get("shape", [])))
        largest = int(config.get("max_batch_size", 0))
        if self.params.mode == "slices" and 0 < largest < self.params.batch_size:
            raise RunnerError(
                f"batch_size {self.params.batch_size} is above the model's max_batch_size "
                f"{largest}; set batch_size to at most {largest}"
            )
        return _Model(input_name, output_name, datatype, shape)


def _tritonclient(name: str) -> Any:
    try:
        import tritonclient.http
    except ImportError as exc:
        raise RunnerError(
            f"model {name!r}: tritonclient is not installed: pip install 'dicomnode[triton]'"
        ) from exc
    return tritonclient.http


def _drop_gevent_hub() -> None:
    """Destroy this thread's gevent hub, which tritonclient's HTTP client created.

    The ModelHost calls each predict in a fresh thread, and gevent keeps a hub (an event
    loop with two file descriptors) per thread until it is destroyed. The main thread's
    hub runs gevent's default loop, which is kept.
    """
    import gevent

    gevent.get_hub().destroy()


def _status(exc: Exception) -> str | None:
    """The HTTP status of a tritonclient error, or None for any other exception."""
    status = getattr(exc, "status", None)
    if type(exc).__name__ != "InferenceServerException" or not callable(status):
        return None
    value = status()
    return str(value) if value is not None else "client"
