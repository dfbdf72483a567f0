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
    slab: int = 16,
) -> list[RegionStats]:
    """Stats of each wanted label present in ``labels`` (absent labels are left out).

    Works a slab of slices at a time: a 300-slice 512x512 volume never gets a float64 or
    int64 copy of its own (that alone would be 1.2 GB).
    """
    if labels.shape != values.shape:
        raise ValueError(f"labels {labels.shape} and values {values.shape} differ in shape")
    wanted = list(wanted)
    size = max(wanted, default=0) + 1
    counts = np.zeros(size, dtype=np.int64)
    sums = np.zeros(size, dtype=np.float64)
    maxima = np.full(size, -np.inf)
    for start in range(0, labels.shape[0], slab):
        part = labels[start : start + slab].ravel()
        weights = values[start : start + slab].ravel()
        inside = part < size
        part, weights = part[inside], weights[inside]
        counts += np.bincount(part, minlength=size)[:size]
        sums += np.bincount(part, weights=weights, minlength=size)[:size]
        for label in wanted:
            chosen = weights[part == label]
            if chosen.size:
                maxima[label] = max(maxima[label], float(chosen.max()))
    stats = []
    for label in wanted:
        voxels = int(counts[label])
        if voxels == 0:
            continue
        stats.append(
            RegionStats(
                label=label,
                voxels=voxels,
                volume_ml=voxels * voxel_ml,
                mean=float(sums[label] / voxels),
                maximum=float(maxima[label]),
            )
        )
    return stats
