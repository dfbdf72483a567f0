"""The interface of a model runner, and the base of every runner's parameters.

A runner turns a preprocessed array into the model's output:

- input: float32, (z, y, x) or (z, y, x, c) with channels from the ``stack`` step;
- output: per-voxel class probabilities (z, y, x, k) as floats, a label map (z, y, x) as
  integers (a runner whose model emits label numbers as floats casts them), or, for a
  classifier, one vector of class probabilities (k,).

``load`` runs once, when the node starts and when ``dicomnode config check`` runs, so a
model that cannot load fails the check rather than the first study. ``predict`` may be
called from several threads at once, up to the runner's ``max_concurrent``: the
``ModelHost`` enforces that limit and the time limit, so runners stay simple.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from dicomnode.runners.envelope import InputEnvelope

InputArray = npt.NDArray[np.float32]
Prediction = npt.NDArray[Any]

Seconds = Annotated[float, Field(gt=0, le=24 * 3600)]
Concurrency = Annotated[int, Field(ge=1, le=64)]


class RunnerParams(BaseModel):
    """A runner as a pipeline's YAML states it; ``kind`` names the runner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    # The limit of one predict() call, excluding the wait for a free slot.
    timeout_seconds: Seconds = 600.0
    # How many predict() calls of this model may run at once (a model's memory is shared).
    max_concurrent: Concurrency = 1
    # The inputs the model was validated on (dicomnode.runners.envelope); None: any.
    envelope: InputEnvelope | None = None


class Runner(Protocol):
    """What the ModelHost runs: built by the registry from a name, params and a folder."""

    @property
    def enforces_timeout(self) -> bool:
        """True when ``predict`` stops the model itself at its limit (a killable process).

        False when the host must run ``predict`` in a thread that it abandons on timeout.
        """
        ...

    def load(self) -> None:
        """Load the model now; raise RunnerError naming the model and the file or function."""
        ...

    def predict(self, array: InputArray, context: Mapping[str, Any]) -> Prediction:
        """The model's output for ``array``; ``context`` carries job facts (ids, spacing)."""
        ...

    def close(self) -> None:
        """Release the model (and any process it runs in); safe to call twice."""
        ...


# Called as factory(name, params, base_dir): base_dir resolves relative model paths (the
# configuration file's folder).
RunnerFactory = Callable[[str, Any, Path], Runner]
