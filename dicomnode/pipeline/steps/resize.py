"""``resize``: every slice to ``rows`` x ``columns`` (e.g. 256 x 256), bilinear.

The field of view is kept: pixel edges align (half-pixel centres, as ``tf.image.resize``
does), so spacing scales by old/new size and the origin, the centre of the new first pixel,
moves accordingly (by half an old pixel when halving). Slices (z) are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dicomnode.pipeline.steps.abc import Count, LabelArray, StepParams, is_label_map
from dicomnode.pipeline.steps.grid import centres_resized, moved
from dicomnode.pipeline.steps.registry import register
from dicomnode.pipeline.steps.sampling import sample
from dicomnode.volume import Volume


class ResizeConfig(StepParams):
    """``{kind: resize, rows: 256, columns: 256}``."""

    kind: Literal["resize"] = "resize"
    rows: Count
    columns: Count


@register(ResizeConfig)
@dataclass(frozen=True, slots=True)
class Resize:
    params: ResizeConfig

    def apply(self, volume: Volume) -> Volume:
        _, rows, columns = volume.shape
        new_rows, new_columns = self.params.rows, self.params.columns
        if (rows, columns) == (new_rows, new_columns):
            return volume
        y = centres_resized(rows, new_rows)
        x = centres_resized(columns, new_columns)
        array = sample(volume.array, {1: y, 2: x}, "linear")
        dz, dy, dx = volume.geometry.spacing
        spacing = (dz, dy * rows / new_rows, dx * columns / new_columns)
        geometry = moved(volume.geometry, (0.0, float(y[0]), float(x[0])), spacing=spacing)
        return volume.with_array(array, geometry=geometry)

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        _, rows, columns = before.array.shape[:3]
        _, new_rows, new_columns = after.array.shape[:3]
        if (rows, columns) == (new_rows, new_columns):
            return labels
        # Source pixel centres in the resized grid's indices: the same mapping, reversed.
        positions = {1: centres_resized(new_rows, rows), 2: centres_resized(new_columns, columns)}
        return sample(labels, positions, "nearest" if is_label_map(labels) else "linear")
