"""``crop_pad``: to a fixed shape, centred; each axis is cropped or padded independently.

``shape`` is ``[z, y, x]`` or ``[y, x]`` (z kept); ``null`` keeps an axis. When the
difference is odd, the extra voxel is cropped from (or padded at) the end. ``pad_value``
is a number or ``min``, the volume's minimum (air on CT, background after normalising).
Restoration is exact: cropped-away voxels come back as 0 (background, or zero probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from dicomnode.pipeline.steps.abc import Count, LabelArray, Number, StepParams
from dicomnode.pipeline.steps.grid import moved
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import Volume

Size = Count | None


class CropPadConfig(StepParams):
    """``{kind: crop_pad, shape: [256, 256], pad_value: -1024}``."""

    kind: Literal["crop_pad"] = "crop_pad"
    shape: Annotated[tuple[Size, ...], Field(min_length=2, max_length=3)]
    pad_value: Number | Literal["min"] = "min"

    def target(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        wanted = self.shape if len(self.shape) == 3 else (None, *self.shape)
        z, y, x = (old if new is None else new for new, old in zip(wanted, shape, strict=True))
        return z, y, x


def _offsets(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, int, int]:
    """Source index of the new voxel 0 per axis: positive when cropping, negative padding."""
    z, y, x = (
        (size_old - size_new) // 2 if size_old >= size_new else -((size_new - size_old) // 2)
        for size_old, size_new in zip(old, new, strict=True)
    )
    return z, y, x


def _place(
    source: LabelArray, offsets: tuple[int, int, int], new: tuple[int, int, int], fill: float
) -> LabelArray:
    """``source`` cut or framed to ``new`` (plus its trailing axes), voxel 0 at ``offsets``."""
    out = np.full(new + source.shape[3:], fill, dtype=source.dtype)
    source_cut, target_cut = [], []
    for offset, size_old, size_new in zip(offsets, source.shape[:3], new, strict=True):
        start_old, start_new = max(offset, 0), max(-offset, 0)
        length = min(size_old - start_old, size_new - start_new)
        source_cut.append(slice(start_old, start_old + length))
        target_cut.append(slice(start_new, start_new + length))
    out[tuple(target_cut)] = source[tuple(source_cut)]
    return out


@register(CropPadConfig)
@dataclass(frozen=True, slots=True)
class CropPad:
    params: CropPadConfig

    def apply(self, volume: Volume) -> Volume:
        old = volume.shape
        new = self.params.target(old)
        if new == old:
            return volume
        pad = self.params.pad_value
        fill = float(volume.array.min()) if pad == "min" else pad
        z, y, x = _offsets(old, new)
        array = _place(volume.array, (z, y, x), new, fill)
        geometry = moved(volume.geometry, (float(z), float(y), float(x)))
        return volume.with_array(array, geometry=geometry)

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        old, new = before.shape, after.shape
        if old == new:
            return labels
        z, y, x = _offsets(old, new)
        return _place(labels, (-z, -y, -x), old, 0)
