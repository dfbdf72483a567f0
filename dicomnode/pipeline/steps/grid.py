"""Moving and rescaling a voxel grid while keeping it right in patient coordinates.

Offsets and positions are in voxel index units of the source grid, (z, y, x) order; the
origin is always the centre of voxel (0, 0, 0), as ImagePositionPatient is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from dicomnode.volume import Geometry

Positions = npt.NDArray[np.float64]


def moved(
    geometry: Geometry,
    origin_index: tuple[float, float, float],
    spacing: tuple[float, float, float] | None = None,
) -> Geometry:
    """The grid whose voxel 0 sits at ``origin_index`` of ``geometry``, with a new spacing."""
    z, y, x = origin_index
    position = geometry.affine() @ np.array([z, y, x, 1.0])
    origin = (float(position[0]), float(position[1]), float(position[2]))
    return replace(
        geometry, origin=origin, spacing=geometry.spacing if spacing is None else spacing
    )


def centres_resized(size_in: int, size_out: int) -> Positions:
    """Where the centres of ``size_out`` voxels covering the same extent fall, in input indices.

    The field of view is kept (pixel edges align, as ``tf.image.resize`` with half-pixel
    centres does), so halving 512 voxels averages pairs and doubling returns them.
    """
    scale = size_in / size_out
    return (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5


def centres_resampled(spacing_in: float, spacing_out: float, count_out: int) -> Positions:
    """Input indices of output voxel centres on a grid that keeps voxel 0's centre."""
    return np.arange(count_out, dtype=np.float64) * (spacing_out / spacing_in)


def resampled_count(size_in: int, spacing_in: float, spacing_out: float) -> int:
    """How many output voxels fit between the first and the last input voxel centre."""
    # The epsilon keeps an exact fit (511 * 0.5 / 1.0 = 255.5 -> 256) from rounding down.
    return int(np.floor((size_in - 1) * spacing_in / spacing_out + 1e-6)) + 1
