"""Running steps in order and walking a result back through them to the source grid.

The trace keeps each step with the grids it went from and to. It keeps grids, not voxels:
each recorded volume's array is a zero-stride placeholder of the right shape, so tracing a
300-slice CT through five steps does not hold five copies of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dicomnode.errors import StepError
from dicomnode.pipeline.steps.abc import LabelArray, Step
from dicomnode.volume import Volume


@dataclass(frozen=True, slots=True)
class TraceEntry:
    step: Step
    before: Volume  # grid only (see module docstring)
    after: Volume


@dataclass(frozen=True, slots=True)
class Trace:
    """How a volume became the model's input; ``restore`` uses it to go back."""

    source: Volume  # grid only
    entries: tuple[TraceEntry, ...]

    @property
    def result(self) -> Volume:
        """The grid the model saw (grid only)."""
        return self.entries[-1].after if self.entries else self.source


def grid_of(volume: Volume) -> Volume:
    """``volume`` with its voxels replaced by a placeholder that takes no memory."""
    placeholder = np.broadcast_to(np.float32(0.0), volume.array.shape)
    return volume.with_array(placeholder)


def run_steps(volume: Volume, steps: Iterable[Step]) -> tuple[Volume, Trace]:
    """The volume after every step, and the trace to map results back."""
    current = volume
    entries: list[TraceEntry] = []
    for step in steps:
        if current.array.ndim != 3:
            raise StepError(
                f"{step.params.kind} comes after a step that made channels; "
                "only the last step may make channels"
            )
        result = step.apply(current)
        entries.append(TraceEntry(step, grid_of(current), grid_of(result)))
        current = result
    return current, Trace(grid_of(volume), tuple(entries))


def restore(labels: LabelArray, trace: Trace) -> LabelArray:
    """``labels`` predicted on the model's grid, on the source volume's grid.

    ``labels`` is (z, y, x) on the model's input grid, optionally with trailing axes (per
    class probabilities); integer labels come back by nearest neighbour, floats linearly.
    """
    grid = trace.result.array.shape[:3]
    if labels.shape[:3] != grid:
        raise StepError(
            f"the result's shape {labels.shape} does not start with the model input's "
            f"grid {grid}, so it cannot be mapped back to the series"
        )
    for entry in reversed(trace.entries):
        labels = entry.step.restore_labels(labels, entry.before, entry.after)
    return labels
