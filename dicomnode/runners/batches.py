"""How array-model runners feed a volume to a model: slices in batches, or the whole volume.

The ``onnx`` and ``triton`` runners share these semantics with the ``tensorflow`` runner:
``mode: slices`` feeds (batch, y, x, c) batches of ``batch_size`` slices and stacks the
outputs along z; ``mode: volume`` feeds the whole (1, z, y, x, c) volume. A (z, y, x)
array gets a channel axis of 1; ``input_channels_last: false`` moves channels to just
after the batch axis on the way in (PyTorch and MONAI models take (batch, c, ...)), and a
per-voxel output's class axis back to the end on the way out. ``output_labels`` reduces
per-voxel class scores to labels (argmax) batch by batch, so a large volume's scores never
exist whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from dicomnode.errors import RunnerError
from dicomnode.models import BUILTIN_PREFIX, builtin_model
from dicomnode.runners.abc import InputArray, Prediction, RunnerParams

Forward = Callable[[InputArray], Prediction]  # one batch in, one batch out
Dimension = int | str | None  # a declared size, or a symbolic or unknown one


class BatchedRunnerParams(RunnerParams):
    """The feeding options every array-model runner kind accepts."""

    mode: Literal["slices", "volume"] = "slices"
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16  # slices per call in slices mode
    input_channels_last: bool = True  # false: the model takes (batch, c, ...)
    # Reduce per-voxel class probabilities to labels (argmax, uint8) batch by batch: a
    # 300 x 512 x 512 CT is 1.2 GB as 4-class float32 probabilities, 79 MB as labels.
    output_labels: bool = False


class FileModelParams(BatchedRunnerParams):
    """A model in a file or folder on this machine (``tensorflow``, ``onnx``)."""

    # Relative to the configuration file's folder, or ``builtin:NAME`` for a model shipped
    # with dicomnode.
    model: str = Field(min_length=1)

    @field_validator("model")
    @classmethod
    def _builtin_exists(cls, value: str) -> str:
        if value.startswith(BUILTIN_PREFIX):
            builtin_model(value.removeprefix(BUILTIN_PREFIX))
        return value

    def model_path(self, base_dir: Path) -> Path:
        """The model's file or folder; relative paths are taken from ``base_dir``."""
        if self.model.startswith(BUILTIN_PREFIX):
            return builtin_model(self.model.removeprefix(BUILTIN_PREFIX)).path
        path = Path(self.model).expanduser()
        return path if path.is_absolute() else base_dir / path

    def check_builtin_digest(self, name: str) -> None:
        """RunnerError when a built-in model's file is not the one shipped (damaged)."""
        if not self.model.startswith(BUILTIN_PREFIX):
            return
        builtin = builtin_model(self.model.removeprefix(BUILTIN_PREFIX))
        digest = hashlib.sha256(builtin.path.read_bytes()).hexdigest()
        if digest != builtin.sha256:
            raise RunnerError(
                f"model {name!r}: built-in model file {builtin.path} is damaged "
                f"(sha256 {digest}, expected {builtin.sha256}); reinstall dicomnode"
            )


def feed(name: str, params: BatchedRunnerParams, array: InputArray, forward: Forward) -> Prediction:
    """The model's output for ``array`` (z, y, x[, c]), called batch by batch."""
    volume = array if array.ndim == 4 else array[..., np.newaxis]
    channels_first = not params.input_channels_last
    if params.mode == "volume":
        batch = np.moveaxis(volume, -1, 0) if channels_first else volume
        output = finish(params, forward(np.ascontiguousarray(batch[np.newaxis])))
        only: Prediction = output[0]
        return only
    slices = np.moveaxis(volume, -1, 1) if channels_first else volume
    size = params.batch_size
    result: Prediction | None = None
    for start in range(0, slices.shape[0], size):
        batch_output = finish(params, forward(np.ascontiguousarray(slices[start : start + size])))
        if batch_output.shape[0] != min(size, slices.shape[0] - start):
            raise RunnerError(
                f"model {name!r} returned {batch_output.shape[0]} outputs for a batch of "
                f"{min(size, slices.shape[0] - start)} slices"
            )
        if result is None:  # filled in place: no second copy of a large output
            result = np.empty((slices.shape[0], *batch_output.shape[1:]), batch_output.dtype)
        result[start : start + size] = batch_output
    if result is None:
        raise RunnerError(f"model {name!r} got an empty volume {array.shape}")
    return result


def finish(params: BatchedRunnerParams, output: Prediction) -> Prediction:
    """One batch's output with classes last, and as labels if asked."""
    per_voxel_classes = output.ndim == (5 if params.mode == "volume" else 4)
    if not per_voxel_classes:  # labels, or a classifier's vector
        return output
    if not params.input_channels_last:
        output = np.moveaxis(output, 1, -1)  # channels-first: classes follow the batch
    if params.output_labels:
        dtype = np.uint8 if output.shape[-1] <= 256 else np.uint16
        labels: Prediction = output.argmax(axis=-1).astype(dtype)
        return labels
    return output


def check_input_rank(
    name: str, params: BatchedRunnerParams, where: str, shape: Sequence[Dimension] | None
) -> None:
    """RunnerError when the model's declared input rank does not fit ``mode``."""
    expected = 5 if params.mode == "volume" else 4
    if shape is not None and len(shape) != expected:
        if params.mode == "volume":
            fed = "(1, z, y, x, c)" if params.input_channels_last else "(1, c, z, y, x)"
        else:
            fed = "(batch, y, x, c)" if params.input_channels_last else "(batch, c, y, x)"
        raise RunnerError(
            f"model {name!r}: {where} takes inputs of rank {len(shape)} {tuple(shape)}, "
            f"but mode {params.mode!r} feeds rank {expected} {fed}"
        )


def check_channels(
    name: str, params: BatchedRunnerParams, shape: Sequence[Dimension] | None, channels: int
) -> None:
    """RunnerError when the model declares another number of input channels."""
    if shape is None:
        return
    declared = shape[-1] if params.input_channels_last else shape[1]
    if isinstance(declared, int) and declared >= 0 and declared != channels:
        raise RunnerError(
            f"model {name!r} takes {declared} input channel(s), the pipeline gives {channels}"
        )


def pick_tensor(key: str, names: list[str], wanted: str | None) -> str:
    """The tensor named by ``key``, or the only one there is."""
    if wanted is None:
        if len(names) != 1:
            raise RunnerError(f"the model has {key}s {names}; set `{key}` to one of them")
        return names[0]
    if wanted not in names:
        raise RunnerError(f"no {key} {wanted!r}; {key}s: {names}")
    return wanted
