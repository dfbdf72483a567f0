"""Preprocessing steps: named, parameter-validated, composable in a pipeline's YAML.

::

    steps:
      - {kind: hu}
      - {kind: resize, rows: 256, columns: 256}
      - {kind: window, center: 40, width: 400, output: unit}

``parse_steps`` (or a pydantic model field typed ``StepList``) validates the list,
``build_steps`` makes the steps, ``run_steps`` applies them and returns a ``Trace``, and
``restore`` carries a model's label or probability map back to the source grid.
"""

from __future__ import annotations

from dicomnode.pipeline.steps.abc import KeepsGrid, LabelArray, Step, StepParams
from dicomnode.pipeline.steps.config import StepConfig, StepList, parse_steps
from dicomnode.pipeline.steps.registry import STEPS, build_steps, register
from dicomnode.pipeline.steps.trace import Trace, TraceEntry, restore, run_steps

__all__ = [
    "STEPS",
    "KeepsGrid",
    "LabelArray",
    "Step",
    "StepConfig",
    "StepList",
    "StepParams",
    "Trace",
    "TraceEntry",
    "build_steps",
    "parse_steps",
    "register",
    "restore",
    "run_steps",
]
