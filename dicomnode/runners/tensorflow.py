"""The ``tensorflow`` runner: ``.keras`` files and SavedModel folders, loaded once, kept warm.

TensorFlow is imported here only, and only inside functions: importing it costs seconds
and hundreds of MB, and ``dicomnode --help``, the rules tools and nodes that run no
TensorFlow model must not pay that. The first ``load`` imports and configures it once
per process (quiet logs, thread pools sized to the machine, GPU memory growth); TensorFlow
uses a GPU when one is present, and ``model_loaded`` logs the device.

The volume is fed as the ``onnx`` and ``triton`` runners feed it (``mode``, ``batch_size``,
``input_channels_last``, ``output_labels``: :mod:`dicomnode.runners.batches`). Models run
in the ModelHost's threads (they must stay loaded to stay warm, so they cannot live in a
killable process): a call past its limit is abandoned, not stopped.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dicomnode.errors import RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import Concurrency, InputArray, Prediction, Seconds
from dicomnode.runners.batches import FileModelParams, check_channels, check_input_rank, feed
from dicomnode.runners.native_stderr import quiet_start_up
from dicomnode.runners.registry import register

log = get_logger(__name__)

Forward = Callable[[InputArray], Prediction]  # one batch in, one batch out


class TensorFlowRunnerConfig(FileModelParams):
    """``{kind: tensorflow, model: builtin:ct-tissue-reference, mode: slices}``."""

    kind: Literal["tensorflow"] = "tensorflow"
    # ``model``: a .keras file or a SavedModel folder.
    signature: str = "serving_default"  # SavedModel folders only
    output: str | None = None  # which output, for models with several
    timeout_seconds: Seconds = 600.0
    max_concurrent: Concurrency = 1


@dataclass(frozen=True, slots=True)
class _LoadedModel:
    forward: Forward
    input_shape: tuple[int | None, ...] | None  # None: the model does not declare it
    keep: Any  # the TensorFlow object that must outlive ``forward``


@register(TensorFlowRunnerConfig)
class TensorFlowRunner:
    """A TensorFlow model kept loaded in this process, fed in batches."""

    enforces_timeout = False

    def __init__(self, name: str, params: TensorFlowRunnerConfig, base_dir: Path) -> None:
        self.name = name
        self.params = params
        self.path = params.model_path(base_dir)
        self.device: str | None = None  # set by load(): where TensorFlow runs the model
        self._model: _LoadedModel | None = None

    def load(self) -> None:
        if self._model is not None:
            return
        started = time.monotonic()
        path = self.path
        if not path.exists():
            raise RunnerError(f"model {self.name!r}: model file {path} does not exist")
        self.params.check_builtin_digest(self.name)
        tf = _tensorflow()
        try:
            finish = self._graph_labels(tf)
            if path.is_dir():
                model = _load_saved_model(
                    tf, path, self.params.signature, self.params.output, finish
                )
            elif path.suffix == ".keras":
                model = _load_keras(tf, path, self.params.output, finish)
            else:
                raise RunnerError("neither a .keras file nor a SavedModel folder")
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RunnerError) else f"{type(exc).__name__}: {exc}"
            raise RunnerError(f"model {self.name!r}: cannot load {path}: {reason}") from exc
        check_input_rank(self.name, self.params, str(path), model.input_shape)
        gpus = tf.config.list_logical_devices("GPU")
        self.device = gpus[0].name if gpus else "/device:CPU:0"
        self._model = model
        log.info(
            "model_loaded",
            model=self.name,
            kind="tensorflow",
            path=str(path),
            mode=self.params.mode,
            device=self.device,
            seconds=round(time.monotonic() - started, 3),
        )

    def predict(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        model = self._model
        if model is None:
            raise RunnerError(f"model {self.name!r} is not loaded")
        channels = array.shape[-1] if array.ndim == 4 else 1
        check_channels(self.name, self.params, model.input_shape, channels)
        return feed(self.name, self.params, array, model.forward)

    def _graph_labels(self, tf: Any) -> Callable[[Any], Any]:
        """What the traced function does to the model's output before it leaves TensorFlow.

        With ``output_labels``, per-voxel class scores become labels there: the argmax
        runs in TensorFlow's threads, and only uint8 labels are copied out (a 16-slice
        512x512 batch of 4 classes is 67 MB of float32 scores, 4 MB of labels).
        """
        if not self.params.output_labels:
            return lambda output: output
        per_voxel_rank = 5 if self.params.mode == "volume" else 4
        axis = -1 if self.params.input_channels_last else 1

        def labels(output: Any) -> Any:
            shape = getattr(output, "shape", None)
            if shape is None or shape.rank != per_voxel_rank or shape[axis] is None:
                return output  # not per-voxel scores, or unknown classes: see _finish
            dtype = tf.uint8 if shape[axis] <= 256 else tf.uint16
            return tf.cast(tf.argmax(output, axis=axis, output_type=tf.int32), dtype)

        return labels

    def close(self) -> None:
        self._model = None


@functools.cache
def _tensorflow() -> Any:
    """Import and configure TensorFlow, once per process (its settings are process-wide)."""
    started = time.monotonic()
    # TensorFlow's C++ logging reads this at import; an operator's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_start_up():  # what the setting above does not reach (native_stderr)
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    # Intra-op: every core this process may use (its affinity, which a cpuset narrows).
    # Inter-op: two, not TensorFlow's one per core: these models are chains of ops, so
    # more would run nothing in parallel and only compete with the node's own threads.
    cpus = len(os.sched_getaffinity(0))
    intra, inter = cpus, min(2, cpus)
    gpus = tf.config.list_physical_devices("GPU")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        for gpu in gpus:
            # Take GPU memory as needed, not all of it at start, so several models fit.
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as exc:  # TensorFlow was initialised before we got here
        log.warning("tensorflow_settings_skipped", reason=str(exc))
    log.info(
        "tensorflow_configured",
        version=tf.__version__,
        gpus=[gpu.name for gpu in gpus],
        intra_op_threads=intra,
        inter_op_threads=inter,
        seconds=round(time.monotonic() - started, 3),
    )
    return tf


def _load_keras(
    tf: Any, path: Path, output: str | None, finish: Callable[[Any], Any]
) -> _LoadedModel:
    import keras

    # compile=False: inference needs no optimizer or loss (and their custom objects);
    # safe_mode (the default) refuses to deserialise arbitrary Python lambdas.
    model = keras.models.load_model(path, compile=False)
    if len(model.inputs) != 1:
        raise RunnerError(f"the model has {len(model.inputs)} inputs; the runner feeds one")
    pick = _output_picker(list(model.output_names), output)
    # One traced graph per input shape, generalised after the second shape (the last,
    # smaller batch of a volume), instead of layer-by-layer eager calls.
    graph = tf.function(
        lambda batch: finish(pick(model(batch, training=False))), reduce_retracing=True
    )

    def forward(batch: InputArray) -> Prediction:
        return np.asarray(graph(tf.constant(batch)).numpy())

    return _LoadedModel(forward, tuple(model.inputs[0].shape), model)


def _load_saved_model(
    tf: Any, path: Path, signature: str, output: str | None, finish: Callable[[Any], Any]
) -> _LoadedModel:
    loaded = tf.saved_model.load(str(path))
    signatures = dict(loaded.signatures)
    if signature not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise RunnerError(f"no signature {signature!r}; signatures: {known}")
    function = signatures[signature]
    _, inputs = function.structured_input_signature
    if len(inputs) != 1:
        raise RunnerError(
            f"signature {signature!r} takes {len(inputs)} inputs; the runner feeds one"
        )
    ((input_name, spec),) = inputs.items()
    pick = _output_picker(sorted(function.structured_outputs), output)

    graph = tf.function(
        lambda batch: finish(pick(function(**{input_name: tf.cast(batch, spec.dtype)}))),
        reduce_retracing=True,
    )

    def forward(batch: InputArray) -> Prediction:
        return np.asarray(graph(tf.constant(batch)).numpy())

    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return _LoadedModel(forward, shape, loaded)


def _output_picker(names: list[str], wanted: str | None) -> Callable[[Any], Any]:
    """Take one output from what the model returns (a tensor, a list or a dict)."""
    if wanted is None:
        if len(names) > 1:
            raise RunnerError(f"the model has outputs {names}; set `output` to one of them")
        return lambda result: result[names[0]] if isinstance(result, Mapping) else result
    if wanted not in names:
        raise RunnerError(f"no output {wanted!r}; outputs: {names}")
    index = names.index(wanted)

    def pick(result: Any) -> Any:
        if isinstance(result, Mapping):
            return result[wanted]
        return result[index] if isinstance(result, list | tuple) else result

    return pick
