"""The ``onnx`` runner: ``.onnx`` files run by onnxruntime, loaded once, kept warm.

The kind for models exported from PyTorch, MONAI or anything else that writes ONNX: a node
running them never imports TensorFlow. onnxruntime is an extra (``dicomnode[onnx]``,
or ``onnxruntime-gpu`` in its place on a GPU host) and is imported only when an ``onnx``
model loads.

``providers`` lists onnxruntime's execution providers in order of preference (default
``[CPUExecutionProvider]``). Those the installed onnxruntime lacks are left out with a
warning (``onnx_providers_unavailable``), so ``[CUDAExecutionProvider,
CPUExecutionProvider]`` runs on the GPU where it can and on the CPU elsewhere; when none is
left, loading fails naming the key. onnxruntime also falls back by itself when a listed
provider cannot start (CUDA libraries missing): ``model_loaded`` logs the providers the
session really uses. Feeding (``mode``, ``batch_size``, ``input_channels_last``,
``output_labels``) is the tensorflow runner's, see :mod:`dicomnode.runners.batches`.
onnxruntime's ``run`` is thread-safe, so one session serves ``max_concurrent`` calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from dicomnode.errors import RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import Concurrency, InputArray, Prediction, Seconds
from dicomnode.runners.batches import (
    FileModelParams,
    check_channels,
    check_input_rank,
    feed,
    pick_tensor,
)
from dicomnode.runners.registry import register

log = get_logger(__name__)

Provider = Annotated[str, Field(pattern=r"^[A-Za-z]+ExecutionProvider$")]

# ONNX tensor types the runner feeds: the pipeline's float32, cast where the model wants.
_FLOAT_TYPES: Mapping[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class OnnxRunnerConfig(FileModelParams):
    """``{kind: onnx, model: builtin:ct-tissue-reference-onnx, mode: slices}``."""

    kind: Literal["onnx"] = "onnx"
    # ``model``: a .onnx file, relative to the configuration file's folder, or ``builtin:NAME``.
    providers: tuple[Provider, ...] = Field(default=("CPUExecutionProvider",), min_length=1)
    input: str | None = None  # which input, for models with several (the others unfed fail)
    output: str | None = None  # which output, for models with several
    timeout_seconds: Seconds = 600.0
    max_concurrent: Concurrency = 1


@dataclass(frozen=True, slots=True)
class _Session:
    session: Any  # onnxruntime.InferenceSession
    input_name: str
    output_name: str
    input_shape: tuple[int | str | None, ...] | None
    input_dtype: type[np.floating[Any]]


@register(OnnxRunnerConfig)
class OnnxRunner:
    """An ONNX model in an onnxruntime session in this process, fed in batches."""

    enforces_timeout = False

    def __init__(self, name: str, params: OnnxRunnerConfig, base_dir: Path) -> None:
        self.name = name
        self.params = params
        self.path = params.model_path(base_dir)
        self.providers: tuple[str, ...] = ()  # set by load(): what the session really uses
        self._session: _Session | None = None

    @property
    def device(self) -> str | None:
        """The provider that runs the model (``CUDAExecutionProvider``, ...), once loaded."""
        return self.providers[0] if self.providers else None

    def load(self) -> None:
        if self._session is not None:
            return
        started = time.monotonic()
        if not self.path.exists():
            raise RunnerError(f"model {self.name!r}: model file {self.path} does not exist")
        self.params.check_builtin_digest(self.name)
        ort = _onnxruntime(self.name)
        usable = self._usable_providers(ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.log_severity_level = 3  # errors only: its warnings go to stderr, not our log
        try:
            session = ort.InferenceSession(str(self.path), options, providers=list(usable))
            loaded = self._describe(session)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RunnerError) else f"{type(exc).__name__}: {exc}"
            raise RunnerError(f"model {self.name!r}: cannot load {self.path}: {reason}") from exc
        check_input_rank(self.name, self.params, str(self.path), loaded.input_shape)
        self.providers = tuple(session.get_providers())
        if self.providers[0] != usable[0]:
            log.warning(
                "onnx_provider_fell_back",
                model=self.name,
                wanted=usable[0],
                providers=list(self.providers),
            )
        self._session = loaded
        log.info(
            "model_loaded",
            model=self.name,
            kind="onnx",
            path=str(self.path),
            mode=self.params.mode,
            device=self.device,
            providers=list(self.providers),
            seconds=round(time.monotonic() - started, 3),
        )

    def predict(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        loaded = self._session
        if loaded is None:
            raise RunnerError(f"model {self.name!r} is not loaded")
        channels = array.shape[-1] if array.ndim == 4 else 1
        check_channels(self.name, self.params, loaded.input_shape, channels)

        def forward(batch: InputArray) -> Prediction:
            fed = batch.astype(loaded.input_dtype, copy=False)
            (output,) = loaded.session.run([loaded.output_name], {loaded.input_name: fed})
            return np.asarray(output)

        return feed(self.name, self.params, array, forward)

    def close(self) -> None:
        self._session = None

    def _usable_providers(self, available: list[str]) -> tuple[str, ...]:
        wanted = self.params.providers
        usable = tuple(p for p in wanted if p in available)
        missing = [p for p in wanted if p not in available]
        if not usable:
            raise RunnerError(
                f"model {self.name!r}: providers {list(wanted)}: none is available in this "
                f"onnxruntime (available: {', '.join(available)}); for CUDA install "
                "onnxruntime-gpu in place of onnxruntime"
            )
        if missing:
            log.warning(
                "onnx_providers_unavailable",
                model=self.name,
                missing=missing,
                using=list(usable),
            )
        return usable

    def _describe(self, session: Any) -> _Session:
        """The input and output the runner uses; RunnerError when they are ambiguous."""
        inputs = {node.name: node for node in session.get_inputs()}
        input_name = pick_tensor("input", list(inputs), self.params.input)
        outputs = [node.name for node in session.get_outputs()]
        output_name = pick_tensor("output", outputs, self.params.output)
        node = inputs[input_name]
        dtype = _FLOAT_TYPES.get(node.type)
        if dtype is None:
            raise RunnerError(f"input {input_name!r} is {node.type}; the runner feeds floats")
        shape = None if node.shape is None else tuple(_dimension(d) for d in node.shape)
        return _Session(session, input_name, output_name, shape, dtype)


def _onnxruntime(name: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RunnerError(
            f"model {name!r}: onnxruntime is not installed: pip install 'dicomnode[onnx]'"
        ) from exc
    return onnxruntime


def _dimension(value: object) -> int | str | None:
    """onnxruntime gives an int, a symbolic name, or None for each axis."""
    return value if isinstance(value, int | str) else None
