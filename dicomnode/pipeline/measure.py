"""Measurements of segmented regions: what the SR reports.

All measurements are taken on the source grid (after labels were restored from the
model's grid), from the values the pipeline chose: HU for CT, SUVbw for PET.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class RegionStats:
    """One label's region: size and intensity statistics."""

    label: int
    voxels: int
    volume_ml: float
    mean: float
    maximum: float

    @property
    def total_lesion_glycolysis(self) -> float:
        """TLG = SUVmean x MTV (g, with SUV in g/ml and the volume in ml)."""
        return self.mean * self.volume_ml


def region_stats(
    labels: npt.NDArray[np.integer],
    values: npt.NDArray[np.floating],
    wanted: Iterable[int],
    voxel_ml: float,
) -> list[RegionStats]:
    """Stats of each wanted label present in ``labels`` (absent labels are left out)."""
    if labels.shape != values.shape:
        raise ValueError(f"labels {labels.shape} and values {values.shape} differ in shape")
    flat_labels = labels.ravel()
    flat_values = values.ravel().astype(np.float64, copy=False)
    counts = np.bincount(flat_labels, minlength=max(wanted, default=0) + 1)
    sums = np.bincount(flat_labels, weights=flat_values, minlength=counts.size)
    stats = []
    for label in wanted:
        voxels = int(counts[label]) if label < counts.size else 0
        if voxels == 0:
            continue
        maximum = float(flat_values[flat_labels == label].max())
        stats.append(
            RegionStats(
                label=label,
                voxels=voxels,
                volume_ml=voxels * voxel_ml,
                mean=float(sums[label] / voxels),
                maximum=maximum,
            )
        )
    return stats
