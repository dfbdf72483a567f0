"""Separable resampling of arrays at fractional indices, one axis at a time (numpy only).

Linear interpolation along each axis in turn is exact trilinear (bilinear in-plane)
interpolation on a regular grid, and needs nothing beyond numpy. Positions outside the
array clamp to its edge voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dicomnode.pipeline.steps.grid import Positions

Method = Literal["linear", "nearest"]
AnyArray = npt.NDArray[Any]


def sample_axis(array: AnyArray, axis: int, positions: Positions, method: Method) -> AnyArray:
    """``array`` sampled along ``axis`` at ``positions`` (fractional indices)."""
    size = array.shape[axis]
    clamped = np.clip(positions, 0.0, size - 1)
    if method == "nearest":
        return np.take(array, np.floor(clamped + 0.5).astype(np.intp), axis=axis)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"linear interpolation needs a floating array, got {array.dtype}")
    low = np.floor(clamped).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    shape = [1] * array.ndim
    shape[axis] = len(positions)
    weight = (clamped - low).astype(array.dtype).reshape(shape)
    # out = a[low] + (a[high] - a[low]) * weight, with two temporaries rather than four.
    out = np.take(array, low, axis=axis)
    step = np.take(array, high, axis=axis)
    step -= out
    step *= weight
    out += step
    return out


def sample(array: AnyArray, positions: Mapping[int, Positions], method: Method) -> AnyArray:
    """``array`` sampled along several axes; the axes that shrink most go first (less work)."""
    order = sorted(positions, key=lambda axis: len(positions[axis]) / array.shape[axis])
    for axis in order:
        array = sample_axis(array, axis, positions[axis], method)
    return array
