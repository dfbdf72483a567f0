"""The model of the ``pet-suv-reference`` pipeline: a fixed SUV threshold.

A REFERENCE model, not a clinical one. SUV 2.5 is the classic cut-off for "metabolically
active" in FDG PET; real lesion segmentation needs more (background-adapted or 41 % SUVmax
thresholds, physiological uptake removed). Runs through the ``python`` runner as
``dicomnode.models.pet_suv_reference:threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_THRESHOLD = 2.5  # SUVbw, g/ml


def threshold(
    array: npt.NDArray[np.floating[Any]], threshold: float = DEFAULT_THRESHOLD
) -> npt.NDArray[np.uint8]:
    """Label 1 where SUV >= ``threshold``, else 0, on the array's own grid (z, y, x)."""
    if array.ndim != 3:
        raise ValueError(f"expects one SUV volume (z, y, x), got shape {array.shape}")
    return (array >= threshold).astype(np.uint8)
