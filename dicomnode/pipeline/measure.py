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
    voxel_ml: float | npt.NDArray[np.floating],
    slab: int = 16,
) -> list[RegionStats]:
    """Stats of each wanted label present in ``labels`` (absent labels are left out).

    ``voxel_ml`` is one voxel's volume, or one per slice (an irregularly spaced stack,
    whose slices differ in thickness); the mean and maximum are over voxels.

    Works a slab of slices at a time, one label at a time: each label's values are picked
    out of the slab (a copy the size of the region within 16 slices) and counted, summed
    (in float64) and maxed there. A ``bincount`` of the whole map would first cast the
    labels to 64-bit integers (for a 300-slice 512x512 volume, 600 MB and most of the
    time), and the per-label picks were needed for the maxima anyway.
    """
    if labels.shape != values.shape:
        raise ValueError(f"labels {labels.shape} and values {values.shape} differ in shape")
    wanted = list(dict.fromkeys(wanted))
    per_slice = np.broadcast_to(np.asarray(voxel_ml, dtype=np.float64), labels.shape[:1])
    counts = dict.fromkeys(wanted, 0)
    volumes = dict.fromkeys(wanted, 0.0)
    sums = dict.fromkeys(wanted, 0.0)
    maxima = dict.fromkeys(wanted, -np.inf)
    for start in range(0, labels.shape[0], slab):
        part = labels[start : start + slab]
        weights = values[start : start + slab]
        slice_ml = per_slice[start : start + slab]
        for label in wanted:
            inside = part == label
            chosen = weights[inside]
            if chosen.size:
                counts[label] += int(chosen.size)
                volumes[label] += float(inside.sum(axis=(1, 2)) @ slice_ml)
                sums[label] += float(chosen.sum(dtype=np.float64))
                maxima[label] = max(maxima[label], float(chosen.max()))
    stats = []
    for label in wanted:
        voxels = counts[label]
        if voxels == 0:
            continue
        stats.append(
            RegionStats(
                label=label,
                voxels=voxels,
                volume_ml=volumes[label],
                mean=float(sums[label] / voxels),
                maximum=float(maxima[label]),
            )
        )
    return stats
