"""``resample``: to a voxel spacing in mm, (z, y, x), trilinear.

The new grid keeps the centre of voxel 0 where it was (the origin does not move) and holds
as many voxels as fit up to the last source voxel centre, so every sample interpolates
between source voxels and none extrapolates. A ``null`` spacing keeps that axis as it is.

``refs`` still name the source slices: they describe the *source* grid (one per source z
index), not the resampled one, and results must be restored to the source grid before
they reference source instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from dicomnode.pipeline.steps.abc import LabelArray, PositiveNumber, StepParams, is_label_map
from dicomnode.pipeline.steps.grid import Positions, centres_resampled, moved, resampled_count
from dicomnode.pipeline.steps.registry import register
from dicomnode.pipeline.steps.sampling import sample
from dicomnode.volume import Volume

Spacing = PositiveNumber | None


class ResampleConfig(StepParams):
    """``{kind: resample, spacing: [3.0, 1.0, 1.0]}``; ``[null, 1.0, 1.0]`` keeps z."""

    kind: Literal["resample"] = "resample"
    spacing: tuple[Spacing, Spacing, Spacing]


@register(ResampleConfig)
@dataclass(frozen=True, slots=True)
class Resample:
    params: ResampleConfig

    def target_spacing(self, volume: Volume) -> tuple[float, float, float]:
        z, y, x = (
            old if new is None else new
            for new, old in zip(self.params.spacing, volume.geometry.spacing, strict=True)
        )
        return z, y, x

    def apply(self, volume: Volume) -> Volume:
        source = volume.geometry.spacing
        target = self.target_spacing(volume)
        positions: dict[int, Positions] = {}
        for axis, (size, old, new) in enumerate(zip(volume.shape, source, target, strict=True)):
            if new != old:
                count = resampled_count(size, old, new)
                positions[axis] = centres_resampled(old, new, count)
        array = sample(volume.array, positions, "linear") if positions else volume.array
        geometry = moved(volume.geometry, (0.0, 0.0, 0.0), spacing=target)
        return volume.with_array(array, geometry=geometry)

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        positions: dict[int, Positions] = {}
        spacings = zip(before.geometry.spacing, after.geometry.spacing, strict=True)
        for axis, (old, new) in enumerate(spacings):
            if new != old:
                # Source voxel centres in the resampled grid's indices.
                count = before.array.shape[axis]
                positions[axis] = np.arange(count, dtype=np.float64) * (old / new)
        if not positions:
            return labels
        return sample(labels, positions, "nearest" if is_label_map(labels) else "linear")
