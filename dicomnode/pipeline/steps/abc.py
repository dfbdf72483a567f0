"""The interface of a preprocessing step, and the base of every step's parameters.

A step turns a Volume into another Volume (``apply``) and knows how to carry a result
computed on its output grid back onto its input grid (``restore_labels``). Steps that only
change voxel values (``hu``, ``suv``, ``window``, ``normalize``, ``stack``) keep the grid,
so their restoration is the identity; steps that change the grid (``resample``, ``resize``,
``crop_pad``) invert their mapping.

Label arrays are indexed (z, y, x) like volumes, optionally with trailing axes (one
probability map per class, say) that restoration carries along untouched. Their dtype says
what they are: integer or boolean arrays are label maps and are restored by nearest
neighbour (labels cannot be averaged); floating arrays are probability or score maps and
are restored by linear interpolation, which keeps them within the range of their values.
A runner that produces label numbers as floats must cast them to an integer type first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, Strict

from dicomnode.volume import Volume

LabelArray = npt.NDArray[Any]

# Strict: YAML reads ``yes`` as true and ``"40"`` as text; either in a number is a mistake.
Number = Annotated[float, Strict()]
PositiveNumber = Annotated[float, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(gt=0)]


class StepParams(BaseModel):
    """Parameters of one step as a pipeline's YAML states them; ``kind`` names the step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    # True for a kind whose output has a trailing channel axis; it must be the last step.
    makes_channels: ClassVar[bool] = False

    def resolved(self, base_dir: Path) -> Self:
        """A copy whose relative file paths are taken from ``base_dir`` (the config's folder)."""
        return self


class Step(Protocol):
    """What the pipeline runs: built from its parameters by the registry."""

    @property
    def params(self) -> StepParams: ...

    def apply(self, volume: Volume) -> Volume:
        """The preprocessed volume; raises StepError when this volume cannot be processed."""
        ...

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        """``labels`` on ``after``'s grid, mapped onto ``before``'s grid.

        ``before`` and ``after`` are the step's input and output; only their grids (shape,
        geometry) are read, never their voxels.
        """
        ...


class KeepsGrid:
    """For steps that change voxel values but not the grid: nothing to map back."""

    __slots__ = ()

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        return labels


def is_label_map(labels: LabelArray) -> bool:
    """Integer and boolean arrays hold labels; floating arrays hold probabilities."""
    return not np.issubdtype(labels.dtype, np.floating)
