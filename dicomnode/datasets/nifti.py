"""Volumes as NIfTI-1: the grid from the DICOM geometry, in the RAS world NIfTI assumes.

A :class:`~dicomnode.volume.Volume` is indexed (z, y, x) and its geometry maps indices to
DICOM patient coordinates, LPS (x to the patient's left, y posterior, z superior). NIfTI
data is indexed (i, j, k) and its affine maps to RAS+ (x right, y anterior, z superior),
the convention of nibabel, FSL, ANTs and dcm2niix. So the data is the array transposed,
(i, j, k) = (x, y, z), and the affine is diag(-1, -1, 1, 1) @ the LPS affine with its
columns reordered: voxel (i, j, k) of the file lies where the DICOM geometry puts pixel
(column i, row j) of slice k, with x and y negated.

The sform holds that affine exactly (code 1, scanner). The qform, a rotation, zooms and a
shift, holds it too unless the grid is sheared (a gantry tilt): then its code is 0 and
readers use the sform. Integral values within int16 (raw HU) are stored as int16, half
the size of float32; everything else (SUV, windowed or normalised values) as float32,
so reading the file back gives exactly the volume's voxels either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.spatialimages import HeaderDataError

from dicomnode.datasets.atomic import write_atomically
from dicomnode.errors import ExportError
from dicomnode.volume import Geometry, Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SCANNER_CODE = 1  # NIFTI_XFORM_SCANNER_ANAT: coordinates of the scanner (DICOM patient)
_INT16 = np.iinfo(np.int16)
_SLICES_PER_CHECK = 16  # the integrality check walks a few slices at a time, not a copy
_GRID_ATOL_MM = 1e-3  # frames of one dynamic series lie on one grid within this
_DESCRIPTION_BYTES = 80  # the size of the header's descrip field


def nifti_affine(geometry: Geometry) -> npt.NDArray[np.float64]:
    """The 4x4 matrix taking NIfTI (i, j, k, 1) = (x, y, z, 1) indices to RAS+ mm."""
    if not geometry.regular:
        raise ExportError(
            "an irregularly spaced stack has no NIfTI grid (one affine for every slice); "
            "resample it to a regular spacing first (a resample step)"
        )
    lps = geometry.affine()[:, [2, 1, 0, 3]]  # columns (z, y, x, 1) -> (x, y, z, 1)
    affine: npt.NDArray[np.float64] = LPS_TO_RAS @ lps
    return affine


def to_nifti(volume: Volume) -> nib.Nifti1Image:
    """The volume as a 3-D NIfTI image (4-D arrays of a ``stack`` step: a vector image).

    A channel axis (z, y, x, c) becomes NIfTI's fifth dimension with the vector intent,
    as NIfTI stores several values per voxel; the fourth (time) is then 1.
    """
    affine = nifti_affine(volume.geometry)
    array = volume.array
    if array.ndim == 3:
        data = array.transpose(2, 1, 0)
    elif array.ndim == 4:
        data = array.transpose(2, 1, 0, 3)[:, :, :, np.newaxis, :]
    else:
        raise ExportError(f"a volume of {array.ndim} axes cannot be written as NIfTI")
    image = _image(data, affine, [array])
    spacing = _zooms(volume.geometry)
    if array.ndim == 4:
        image.header.set_intent("vector")
        image.header.set_zooms((*spacing, 1.0, 1.0))
    else:
        image.header.set_zooms(spacing)
    _describe(image, volume)
    return image


def to_nifti_4d(volumes: Sequence[Volume], frame_seconds: Sequence[float]) -> nib.Nifti1Image:
    """Time frames on one grid as a 4-D image, (i, j, k, t).

    ``frame_seconds`` is each frame's time (for a dynamic PET series, what
    :func:`dicomnode.datasets.dynamic.load_dynamic` gives), rising. NIfTI holds only a
    start (``toffset``: the first frame's time) and one step (``pixdim[4]``: the median
    interval), so frames of uneven length need their times beside the file:
    :func:`frame_timing` and :func:`save_sidecar`.
    """
    if not volumes:
        raise ExportError("no time frames to write")
    if len(frame_seconds) != len(volumes):
        raise ExportError(f"{len(frame_seconds)} frame times for {len(volumes)} time frames")
    times = np.asarray(frame_seconds, dtype=np.float64)
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ExportError(f"frame times must be finite and rise, got {list(frame_seconds)}")
    first = volumes[0]
    affine = nifti_affine(first.geometry)
    for number, volume in enumerate(volumes[1:], start=2):
        if volume.array.ndim != 3:
            raise ExportError(f"time frame {number} has a channel axis; a 4-D image has none")
        if volume.array.shape != first.array.shape or not np.allclose(
            nifti_affine(volume.geometry), affine, rtol=0.0, atol=_GRID_ATOL_MM
        ):
            raise ExportError(
                f"time frame {number} lies on another grid than frame 1 "
                f"(shape {volume.array.shape} vs {first.array.shape}, or other positions): "
                "a 4-D image needs one grid"
            )
        if volume.units != first.units:
            raise ExportError(f"time frame {number} is in {volume.units}, frame 1 in {first.units}")
    if first.array.ndim != 3:
        raise ExportError("time frame 1 has a channel axis; a 4-D image has none")
    data = np.stack([v.array.transpose(2, 1, 0) for v in volumes], axis=-1)
    image = _image(data, affine, [v.array for v in volumes])
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    image.header.set_zooms((*_zooms(first.geometry), step))
    image.header["toffset"] = float(times[0])
    _describe(image, first)
    return image


def frame_timing(
    frame_seconds: Sequence[float],
    durations_seconds: Sequence[float],
    start_seconds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Every frame's timing as a JSON sidecar holds it (BIDS PET names where they exist).

    ``FrameTimesStart`` (BIDS) only where the frames' start times are known;
    ``FrameReferenceTime`` is each frame's time as given to :func:`to_nifti_4d`.
    """
    timing: dict[str, Any] = {
        "FrameReferenceTime": [float(t) for t in frame_seconds],
        "FrameDuration": [float(d) for d in durations_seconds],
    }
    if start_seconds is not None:
        timing["FrameTimesStart"] = [float(t) for t in start_seconds]
    return timing


def save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Write ``image`` to ``path`` (``.nii.gz``), whole or not at all."""
    if not path.name.endswith(".nii.gz"):
        raise ExportError(f"{path.name}: a NIfTI export is written as .nii.gz")
    write_atomically(path, partial(nib.save, image))


def sidecar_path(nifti_path: Path) -> Path:
    """``scan.json`` beside ``scan.nii.gz``, as BIDS names a sidecar."""
    return nifti_path.with_name(nifti_path.name.removesuffix(".nii.gz") + ".json")


def save_sidecar(values: Mapping[str, Any], path: Path) -> None:
    """Write a JSON sidecar (e.g. :func:`frame_timing`), whole or not at all."""
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    write_atomically(path, partial(_write_text, text))


def _write_text(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8")


def _image(
    data: npt.NDArray[np.float32],
    affine: npt.NDArray[np.float64],
    arrays: Sequence[npt.NDArray[np.float32]],
) -> nib.Nifti1Image:
    dtype = np.int16 if all(_fits_int16(a) for a in arrays) else np.float32
    image = nib.Nifti1Image(data.astype(dtype, copy=False), affine)
    image.header.set_data_dtype(dtype)
    image.header.set_slope_inter(1.0, 0.0)  # stored values are the voxels: no scaling
    image.set_sform(affine, code=SCANNER_CODE)
    try:
        image.set_qform(affine, code=SCANNER_CODE, strip_shears=False)
    except HeaderDataError:
        # A sheared grid: no quaternion holds it; readers take the exact sform instead.
        image.set_qform(affine, code=0)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _zooms(geometry: Geometry) -> tuple[float, float, float]:
    """Voxel size (i, j, k) in mm; k is the spacing along the normal, as dcm2niix has it."""
    dz, dy, dx = geometry.spacing
    return float(dx), float(dy), float(dz)


def _fits_int16(array: npt.NDArray[np.float32]) -> bool:
    """Whether every value is an integer int16 holds (raw HU), checked a few slices at a time."""
    for start in range(0, array.shape[0], _SLICES_PER_CHECK):
        part = array[start : start + _SLICES_PER_CHECK]
        if part.size == 0:
            continue
        if not np.all(np.isfinite(part)):
            return False
        if float(part.min()) < _INT16.min or float(part.max()) > _INT16.max:
            return False
        if not np.array_equal(np.rint(part), part):
            return False
    return array.size > 0


def _describe(image: nib.Nifti1Image, volume: Volume) -> None:
    """Modality and units in the header's description: never an identifier."""
    text = f"dicomnode {volume.modality} {volume.units}".strip()
    image.header["descrip"] = text.encode("ascii", "replace")[:_DESCRIPTION_BYTES]
