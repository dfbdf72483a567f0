"""Volumes as SimpleITK images and back: the same voxels at the same places in LPS.

SimpleITK indexes images (x, y, z) and, like DICOM, places them in LPS millimetres, so a
volume's (z, y, x) array is an image as it is; its direction matrix has the row, column
and stacking directions as columns and its spacing is the volume's, reversed. A gantry
tilt is exact too: the stacking direction is then the slice normal plus the shear, so the
matrix is not orthogonal, which ITK's index-to-point mapping allows. An irregular stack
has no one matrix and is refused (the engine regularizes such a series before a step
that moves the grid).

This module imports SimpleITK (a third of a second); only the ``register`` step's work
imports it, so a node without that step never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk  # noqa: N813 - the name its documentation and users know

from dicomnode.errors import ConfigError, StepError
from dicomnode.volume import Geometry

# Direction cosines of a template must be orthonormal to this: a Geometry has no shear of
# its rows and columns, and a file's float32 header holds about seven digits.
ORTHONORMAL_TOLERANCE = 1e-4


def image_of(array: npt.NDArray[Any], geometry: Geometry) -> sitk.Image:
    """``array`` (z, y, x) as an image on ``geometry``'s grid (the pixels are copied)."""
    image = sitk.GetImageFromArray(array)
    place(image, geometry)
    return image


def place(image: sitk.Image, geometry: Geometry) -> None:
    """Give ``image`` the grid of ``geometry``: origin, spacing and direction."""
    origin, spacing, direction = grid_of(geometry)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)


Triple = tuple[float, float, float]

# SimpleITK has no bool or float16 images: such arrays are resampled as these, cast back.
_WORK_TYPES: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.bool_): np.dtype(np.uint8),
    np.dtype(np.float16): np.dtype(np.float32),
}


def grid_of(geometry: Geometry) -> tuple[Triple, Triple, tuple[float, ...]]:
    """SimpleITK's origin, (x, y, z) spacing and row-major direction of ``geometry``."""
    if not geometry.regular:
        raise StepError(
            "register needs a regularly spaced stack; these slices lie at uneven distances "
            "(resample them to one spacing first)"
        )
    step = geometry.slice_step()  # the slice normal times dz, plus the shear of a tilt
    dz = float(np.linalg.norm(step))
    _, dy, dx = geometry.spacing
    direction = np.column_stack([geometry.row_direction, geometry.column_direction, step / dz])
    ox, oy, oz = geometry.origin
    return (
        (float(ox), float(oy), float(oz)),
        (float(dx), float(dy), dz),
        tuple(float(v) for v in direction.ravel()),
    )


def resampled(
    array: npt.NDArray[Any],
    geometry: Geometry,
    transform: sitk.Transform,
    shape: tuple[int, int, int],
    onto: Geometry,
    *,
    nearest: bool,
    default: float = 0.0,
) -> npt.NDArray[Any]:
    """``array`` (on ``geometry``) sampled at ``transform`` of each point of the grid
    ``shape`` on ``onto``; trailing axes of ``array`` are carried along, and its dtype kept.
    """
    trailing = array.shape[3:]
    work_type: np.dtype[Any] = _WORK_TYPES.get(array.dtype, array.dtype)
    channels = np.asarray(array, dtype=work_type).reshape(*array.shape[:3], -1)
    origin, spacing, direction = grid_of(onto)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = []
    for index in range(channels.shape[3]):
        image = image_of(np.ascontiguousarray(channels[..., index]), geometry)
        moved = sitk.Resample(
            image, grid_size(shape), transform, interpolator, origin, spacing, direction,
            default, image.GetPixelID(),
        )  # fmt: skip
        out.append(sitk.GetArrayFromImage(moved))
    result = np.stack(out, axis=-1).reshape(*shape, *trailing)
    return result.astype(array.dtype, copy=False)


def grid_size(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """SimpleITK's (x, y, z) size of a (z, y, x, ...) array."""
    return int(shape[2]), int(shape[1]), int(shape[0])


def geometry_of(image: sitk.Image) -> Geometry:
    """The Geometry of ``image``'s grid; its direction must be orthonormal."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
        raise ValueError("its axes are not orthogonal unit vectors (a sheared grid)")
    sx, sy, sz = (float(v) for v in image.GetSpacing())
    row, column, stack = (tuple(float(v) for v in direction[:, i]) for i in range(3))
    ox, oy, oz = (float(v) for v in image.GetOrigin())
    return Geometry(
        origin=(ox, oy, oz),
        row_direction=(row[0], row[1], row[2]),
        column_direction=(column[0], column[1], column[2]),
        slice_direction=(stack[0], stack[1], stack[2]),
        spacing=(sz, sy, sx),
    )


def check_template(path: Path) -> None:
    """Read ``path``'s header only: a 3-D, single-valued image on an orthonormal grid.

    Raises ConfigError naming ``template`` and the file, so a configuration check (and
    each job's start) says what is wrong without reading the voxels.
    """
    if not path.is_file():
        raise ConfigError(f"template: {path}: no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ConfigError(
            f"template: {path}: SimpleITK cannot read it ({itk_reason(exc)})"
        ) from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise ConfigError(
            f"template: {path}: needs a 3-D image of one value per voxel, it has "
            f"{reader.GetDimension()} dimensions and {reader.GetNumberOfComponents()} values"
        )
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
        raise ConfigError(f"template: {path}: its axes are not orthogonal (a sheared grid)")


def read_template(path: Path) -> sitk.Image:
    """The template's voxels as float32 (the metric's type), on its grid."""
    check_template(path)
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise StepError(f"template {path}: SimpleITK cannot read it ({itk_reason(exc)})") from None
    return image


def itk_reason(exc: Exception) -> str:
    """ITK's messages run over many lines, with its source's path; the reason is last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
