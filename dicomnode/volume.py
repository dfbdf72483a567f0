"""The Volume: a series as a geometrically correct 3-D array, the currency of pipelines.

Index order is (z, y, x): z runs along the slice normal (sorted by position, not by
InstanceNumber), y down the columns (rows of the image), x along the rows. ``refs[z]``
names the source instance (and frame, for multi-frame objects) each slice came from, so
results can reference and align with their sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SliceRef:
    """Where one z index came from."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None  # 1-based, for multi-frame sources


@dataclass(frozen=True, slots=True)
class Geometry:
    """Voxel grid in patient coordinates (LPS, mm), as DICOM's image plane module has it."""

    origin: tuple[float, float, float]  # ImagePositionPatient of voxel (0, 0, 0)
    row_direction: tuple[float, float, float]  # ImageOrientationPatient[0:3]: +x
    column_direction: tuple[float, float, float]  # ImageOrientationPatient[3:6]: +y
    slice_direction: tuple[float, float, float]  # unit normal pointing to increasing z
    spacing: tuple[float, float, float]  # (z, y, x) in mm: slice spacing, row, column
    # A gantry-tilted stack is sheared: each slice is offset in its own plane by ``shear``
    # (patient coordinates, mm per mm along the normal; tan(tilt) long) besides its step
    # along the normal. The z spacing stays the spacing *along the normal*, so a voxel's
    # volume is still dz * dy * dx (a shear keeps volumes), as dcm2niix measures it.
    shear: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # An irregularly spaced stack (accepted for slice-wise pipelines only): each slice's
    # distance along the normal from the first, in mm; ``spacing[0]`` is then the median
    # gap and :meth:`affine` is refused, since no one matrix places every slice.
    slice_offsets: tuple[float, ...] | None = None

    @property
    def regular(self) -> bool:
        """Whether the slices lie at one spacing (an affine grid)."""
        return self.slice_offsets is None

    def slice_thicknesses(self, count: int) -> npt.NDArray[np.float64]:
        """Each of ``count`` slices' extent along the normal, in mm.

        A regular stack's spacing; for an irregular one, half the distance between each
        slice's neighbours (the end slices: the gap to their one neighbour), so the
        slices together span the stack with no gap and no overlap.
        """
        if self.slice_offsets is None or count < 2:
            return np.full(count, self.spacing[0])
        offsets = np.asarray(self.slice_offsets, dtype=np.float64)
        if offsets.size != count:
            raise ValueError(f"{offsets.size} slice offsets for {count} slices")
        gaps = np.diff(offsets)
        return np.concatenate([gaps[:1], (gaps[:-1] + gaps[1:]) / 2, gaps[-1:]])

    def slice_voxel_ml(self, count: int) -> npt.NDArray[np.float64]:
        """The volume of one voxel of each of ``count`` slices, in ml."""
        _dz, dy, dx = self.spacing
        return self.slice_thicknesses(count) * dy * dx / 1000.0

    @property
    def sheared(self) -> bool:
        """Whether slices are offset in-plane from one another (a gantry tilt)."""
        return any(v != 0.0 for v in self.shear)

    @property
    def tilt_degrees(self) -> float:
        """The angle between the stacking direction and the slice normal."""
        return float(np.degrees(np.arctan(np.linalg.norm(self.shear))))

    def slice_step(self) -> npt.NDArray[np.float64]:
        """The offset in mm from one slice's first voxel to the next one's."""
        step: npt.NDArray[np.float64] = np.add(self.slice_direction, self.shear, dtype=np.float64)
        return step * self.spacing[0]

    def affine(self) -> npt.NDArray[np.float64]:
        """4x4 matrix taking (z, y, x, 1) voxel indices to patient (x, y, z, 1) in mm."""
        if self.slice_offsets is not None:
            raise ValueError("an irregularly spaced stack has no affine grid")
        _dz, dy, dx = self.spacing
        matrix = np.eye(4)
        matrix[:3, 0] = self.slice_step()
        matrix[:3, 1] = np.asarray(self.column_direction) * dy
        matrix[:3, 2] = np.asarray(self.row_direction) * dx
        matrix[:3, 3] = self.origin
        return matrix

    @property
    def voxel_volume_ml(self) -> float:
        """dz * dy * dx: dz is along the normal, so this holds for sheared stacks too.

        For an irregular stack, with the median gap: use :meth:`slice_voxel_ml`.
        """
        dz, dy, dx = self.spacing
        return dz * dy * dx / 1000.0


@dataclass(frozen=True, slots=True)
class Volume:
    """Pixel values in modality units (HU for CT after rescale) on a known grid."""

    array: FloatArray  # (z, y, x)
    geometry: Geometry
    refs: tuple[SliceRef, ...]  # one per z index of the *source* grid
    modality: str
    units: str  # "HU", "BQML", "SUVbw", "1" (unitless, e.g. after normalisation) ...
    frame_of_reference_uid: str | None = None
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    # Header values steps need (PET decay/weight, window presets ...), JSON-friendly.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    def with_array(self, array: FloatArray, **changes: Any) -> Volume:
        """A copy with new voxel values (same grid unless ``geometry`` is given)."""
        return replace(self, array=array, **changes)
