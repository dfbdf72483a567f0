"""Tilted or unevenly spaced stacks onto a regular grid for volumetric models, and back.

A slice-by-slice model sees each acquired slice as it is, so a tilted series needs
nothing. A volumetric model would see the anatomy sheared from slice to slice, so its
input is corrected the way dcm2niix corrects a gantry tilt: each slice is shifted in its
own plane, by the shear times its distance along the normal, onto the regular grid whose
slices stack straight along the normal from the first one (bilinear; what falls outside
the acquired slice takes the volume's minimum, air for CT). The model's label map is then
shifted back onto the acquired slices (nearest label; what falls outside is background),
so the SEG still follows the source frames. Unevenly spaced slices are likewise
interpolated along the normal onto the median spacing, and labels go back to each
acquired slice from the nearest regular one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from dicomnode.volume import FloatArray, Volume

Labels = npt.NDArray[np.integer]


@dataclass(frozen=True, slots=True)
class Untilted:
    """The regular volume for the model and the in-plane shifts that made it."""

    volume: Volume
    shifts: npt.NDArray[np.float64]  # (z, 2): each slice's (y, x) shift in pixels

    def labels_back(self, labels: Labels) -> Labels:
        """A label map on the regular grid back onto the acquired, sheared slices."""
        if labels.shape != self.volume.shape:
            raise ValueError(f"labels {labels.shape} are not on the grid {self.volume.shape}")
        out = np.zeros_like(labels)
        for z, (dy, dx) in enumerate(self.shifts):
            # Acquired pixel (i, j) lies at regular pixel (i + dy, j + dx) of its slice.
            _nearest_into(out[z], labels[z], round(float(dy)), round(float(dx)))
        return out


def untilt(volume: Volume) -> Untilted:
    """``volume`` resampled onto the unsheared grid through its first slice."""
    geometry = volume.geometry
    dz, dy, dx = geometry.spacing
    along = (
        np.arange(volume.shape[0], dtype=np.float64) * dz
        if geometry.slice_offsets is None
        else np.asarray(geometry.slice_offsets, dtype=np.float64)
    )
    shear = np.asarray(geometry.shear, dtype=np.float64)
    shifts = np.stack(
        [
            along * float(shear @ np.asarray(geometry.column_direction)) / dy,
            along * float(shear @ np.asarray(geometry.row_direction)) / dx,
        ],
        axis=1,
    )
    fill = float(volume.array.min()) if volume.array.size else 0.0
    array: FloatArray = np.empty_like(volume.array)
    for z, (sy, sx) in enumerate(shifts):
        # Regular pixel (i, j) is acquired pixel (i - sy, j - sx) of the same slice.
        array[z] = _shifted(volume.array[z], -sy, -sx, fill)
    regular = volume.with_array(array, geometry=replace(geometry, shear=(0.0, 0.0, 0.0)))
    return Untilted(regular, shifts)


def _shifted(image: FloatArray, dy: float, dx: float, fill: float) -> FloatArray:
    """``out[i, j] = image[i + dy, j + dx]``, bilinear; ``fill`` outside the image."""
    return _shift_axis(_shift_axis(image, dy, 0, fill), dx, 1, fill)


def _shift_axis(image: FloatArray, shift: float, axis: int, fill: float) -> FloatArray:
    """One axis of :func:`_shifted`: linear between the two neighbours of each sample."""
    size = image.shape[axis]
    whole = int(np.floor(shift))
    fraction = np.float32(shift - whole)
    padded = np.full(
        tuple(n + 2 * (size + 1) if a == axis else n for a, n in enumerate(image.shape)),
        fill,
        dtype=np.float32,
    )
    index: list[slice] = [slice(None)] * 2
    index[axis] = slice(size + 1, 2 * size + 1)
    padded[tuple(index)] = image
    start = size + 1 + whole
    start = min(max(start, 0), padded.shape[axis] - size - 1)
    low: list[slice] = [slice(None)] * 2
    high: list[slice] = [slice(None)] * 2
    low[axis] = slice(start, start + size)
    high[axis] = slice(start + 1, start + 1 + size)
    mixed = padded[tuple(low)] * (1 - fraction) + padded[tuple(high)] * fraction
    out: FloatArray = mixed.astype(np.float32, copy=False)
    return out


def _nearest_into(out: Labels, labels: Labels, dy: int, dx: int) -> None:
    """``out[i, j] = labels[i + dy, j + dx]`` where that lies inside ``labels``."""
    rows, columns = labels.shape
    i0, i1 = max(0, -dy), min(rows, rows - dy)
    j0, j1 = max(0, -dx), min(columns, columns - dx)
    if i0 < i1 and j0 < j1:
        out[i0:i1, j0:j1] = labels[i0 + dy : i1 + dy, j0 + dx : j1 + dx]


@dataclass(frozen=True, slots=True)
class Regularized:
    """An irregularly spaced volume on a regular grid, and where each acquired slice went."""

    volume: Volume
    nearest: npt.NDArray[np.intp]  # per acquired slice: the nearest regular slice

    def labels_back(self, labels: Labels) -> Labels:
        """A label map on the regular grid back onto the acquired slices (nearest slice)."""
        if labels.shape[0] != self.volume.shape[0]:
            raise ValueError(f"labels {labels.shape} are not on the grid {self.volume.shape}")
        out: Labels = labels[self.nearest]
        return out


def regularize(volume: Volume) -> Regularized:
    """``volume``'s unevenly spaced slices resampled at the median spacing, linearly in z.

    The regular slices run from the first acquired slice, at the median gap, as far as the
    last; each is interpolated between the two acquired slices around it, on the same line
    (a shear, if any, is kept: it is per mm along the normal).
    """
    geometry = volume.geometry
    if geometry.slice_offsets is None:
        raise ValueError("the volume is regularly spaced already")
    offsets = np.asarray(geometry.slice_offsets, dtype=np.float64)
    spacing = geometry.spacing[0]
    count = int(np.floor(offsets[-1] / spacing + 1e-6)) + 1
    wanted = np.arange(count, dtype=np.float64) * spacing
    upper = np.clip(np.searchsorted(offsets, wanted, side="right"), 1, offsets.size - 1)
    lower = upper - 1
    weight = np.clip((wanted - offsets[lower]) / (offsets[upper] - offsets[lower]), 0.0, 1.0)
    array: FloatArray = np.empty((count, *volume.shape[1:]), dtype=np.float32)
    for z in range(count):
        w = np.float32(weight[z])
        array[z] = volume.array[lower[z]] * (1 - w) + volume.array[upper[z]] * w
    refs = tuple(volume.refs[int(i)] for i in np.where(weight < 0.5, lower, upper))
    regular = volume.with_array(array, geometry=replace(geometry, slice_offsets=None), refs=refs)
    nearest = np.clip(np.rint(offsets / spacing).astype(np.intp), 0, count - 1)
    return Regularized(regular, nearest)
