"""``normalize``: min-max to a range (0..1, 0..255) or z-score, from a volume's statistics.

``mask_min`` restricts the statistics to voxels above that value (the body, not the air
around it); every voxel is transformed. Min-max output is clipped to the range, since
voxels outside the mask may lie below its minimum. A volume whose statistics are degenerate
(constant, or no voxel above ``mask_min``) is refused rather than turned into zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import model_validator

from dicomnode.errors import StepError
from dicomnode.pipeline.steps.abc import KeepsGrid, Number, StepParams
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import FloatArray, Volume


class NormalizeConfig(StepParams):
    """``{kind: normalize, method: minmax, range: [0, 255], mask_min: -500}``."""

    kind: Literal["normalize"] = "normalize"
    method: Literal["minmax", "zscore"]
    range: tuple[Number, Number] | None = None  # minmax only; 0..1 when not given
    mask_min: Number | None = None

    @model_validator(mode="after")
    def _check_range(self) -> NormalizeConfig:
        if self.range is not None:
            if self.method != "minmax":
                raise ValueError("range applies to method minmax only")
            if not self.range[0] < self.range[1]:
                raise ValueError(f"range must rise, got {list(self.range)}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return self.range if self.range is not None else (0.0, 1.0)


@register(NormalizeConfig)
@dataclass(frozen=True, slots=True)
class Normalize(KeepsGrid):
    params: NormalizeConfig

    def apply(self, volume: Volume) -> Volume:
        sample = self._statistics_voxels(volume.array)
        if self.params.method == "minmax":
            array = self._minmax(volume.array, sample)
        else:
            array = self._zscore(volume.array, sample)
        return volume.with_array(array, units="1")

    def _statistics_voxels(self, array: FloatArray) -> FloatArray:
        if self.params.mask_min is None:
            return array
        selected = array[array > self.params.mask_min]
        if selected.size == 0:
            raise StepError(
                f"normalize: no voxel is above mask_min {self.params.mask_min:g}, "
                f"so there are no statistics (the maximum is {float(array.max()):g})"
            )
        return selected

    def _minmax(self, array: FloatArray, sample: FloatArray) -> FloatArray:
        low, high = float(sample.min()), float(sample.max())
        if high == low:
            raise StepError(f"normalize: every voxel is {low:g}, so min-max is undefined")
        start, stop = self.params.bounds
        scale = (stop - start) / (high - low)
        # float32 in place: a 300-slice CT is 300 MB a copy, and float32 is precise enough.
        out = array - np.float32(low)
        out *= np.float32(scale)
        out += np.float32(start)
        return np.clip(out, start, stop, out=out)

    def _zscore(self, array: FloatArray, sample: FloatArray) -> FloatArray:
        mean = float(np.mean(sample, dtype=np.float64))
        std = float(np.std(sample, dtype=np.float64))
        if std == 0.0:
            raise StepError(f"normalize: every voxel is {mean:g}, so the z-score is undefined")
        out = array - np.float32(mean)
        out /= np.float32(std)
        return out
