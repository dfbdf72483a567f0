"""Ground truth of a phantom: tissue volumes and mean HU, counted from the voxel labels.

The truth is exact for the voxels written, not for the analytic shapes, so a model that
thresholds the images at :data:`FAT_HU`, :data:`SOFT_TISSUE_HU` and :data:`BONE_HU` must
find these volumes to the voxel (noise of ~10 HU never crosses a range boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dicomnode.phantom.anatomy import NOMINAL_HU, Labels, Tissue

_LABEL_COUNT: Final = len(Tissue)


@dataclass(frozen=True, slots=True)
class HURange:
    """A closed range of CT numbers that classifies a voxel as one tissue."""

    low: int
    high: int

    def contains(self, hu: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = (hu >= self.low) & (hu <= self.high)
        return inside


# The usual body-composition windows (e.g. Alberta protocol for fat: -190 to -30 HU).
FAT_HU: Final = HURange(-190, -30)
SOFT_TISSUE_HU: Final = HURange(-29, 150)
BONE_HU: Final = HURange(300, 3071)  # 3071: the top of 12 bits stored at intercept -1024


@dataclass(frozen=True, slots=True)
class TissueVolumes:
    """True volumes in millilitres; the liver is part of the soft tissue."""

    fat_ml: float
    soft_tissue_ml: float
    bone_ml: float
    liver_ml: float


@dataclass(frozen=True, slots=True)
class TissueHU:
    """Mean HU of each tissue; NaN where a tissue is not in view.

    These are the noise-free means: the written means differ by about noise_hu divided by
    the root of the voxel count, well under 0.1 HU for any realistic series.
    """

    fat: float
    soft_tissue: float
    bone: float


class Tally:
    """Accumulates voxel counts per label, one slice at a time."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts = np.zeros(_LABEL_COUNT, dtype=np.int64)

    def add(self, labels: Labels) -> None:
        self._counts += np.bincount(labels.ravel(), minlength=_LABEL_COUNT)

    def volumes(self, voxel_ml: float) -> TissueVolumes:
        counts = self._counts
        return TissueVolumes(
            fat_ml=float(counts[Tissue.FAT]) * voxel_ml,
            soft_tissue_ml=float(counts[Tissue.SOFT_TISSUE] + counts[Tissue.LIVER]) * voxel_ml,
            bone_ml=float(counts[Tissue.BONE]) * voxel_ml,
            liver_ml=float(counts[Tissue.LIVER]) * voxel_ml,
        )

    def mean_hu(self) -> TissueHU:
        return TissueHU(
            fat=self._mean(Tissue.FAT),
            soft_tissue=self._mean(Tissue.SOFT_TISSUE, Tissue.LIVER),
            bone=self._mean(Tissue.BONE),
        )

    def _mean(self, *tissues: Tissue) -> float:
        count = sum(int(self._counts[t]) for t in tissues)
        if count == 0:
            return float("nan")
        return sum(int(self._counts[t]) * int(NOMINAL_HU[t]) for t in tissues) / count
