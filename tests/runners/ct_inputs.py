"""CT inputs the runner suites share: a small phantom and the reference pipeline's HU volume.

A module of its own (not a conftest) so test modules can import the helpers by name:
pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.loading import load_series
from dicomnode.pipeline.steps import build_steps, run_steps
from dicomnode.runners import parse_runner_config

PIPELINE = "ct-tissue-reference"
# Small, and noisy enough that some voxels sit near the class edges.
PHANTOM = CTPhantomSpec(
    slices=6, rows=96, columns=96, pixel_spacing_mm=4.0, slice_thickness_mm=5.0, noise_hu=8
)


def write_phantom(folder: Path) -> list[Path]:
    return write_ct_phantom(folder, PHANTOM).paths


def hu_volume(paths: Sequence[Path]) -> npt.NDArray[np.float32]:
    """What the reference CT pipeline feeds its model: the series in HU, (z, y, x)."""
    _, pipelines = reference_definitions()
    loaded = load_series(paths, irregular=True)
    prepared, _ = run_steps(loaded.volume, build_steps(pipelines[PIPELINE].steps))
    return np.asarray(prepared.array, dtype=np.float32)


def reference_models(model: dict[str, Any]) -> dict[str, Any]:
    """The built-in model definitions with the CT model replaced by ``model``."""
    models, _ = reference_definitions()
    return {**models, PIPELINE: parse_runner_config({"output_labels": True, **model})}
