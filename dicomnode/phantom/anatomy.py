"""The phantom's body: a voxel label per tissue, and the HU each label is drawn with.

Shapes are in patient millimetres (LPS, isocentre at the image centre), so changing the
pixel spacing changes the resolution of the same body, not its size; a field of view
smaller than the body crops it. Along z the liver and the rib cage are placed as fractions
of the scanned range, so a short series crosses the same organs as a long one.

The static cross-section (body, fat, visceral fat, spine) is labelled once; each slice then
only compares two precomputed distance maps, for the liver ellipsoid and the ribs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

Labels = npt.NDArray[np.uint8]
FloatMap = npt.NDArray[np.float32]


class Tissue(IntEnum):
    """Voxel labels; the value is the index into :data:`NOMINAL_HU`."""

    AIR = 0
    FAT = 1
    SOFT_TISSUE = 2
    LIVER = 3
    BONE = 4


# Textbook CT numbers, placed so that noise of ~10 HU keeps every class at least six sigma
# inside the HU ranges of dicomnode.phantom.truth.
NOMINAL_HU: Final = np.array([-1000, -100, 40, 60, 700], dtype=np.int16)

# Body: an ellipse 340 x 240 mm (a mid-sized adult abdomen), skin to muscle ~18 mm of fat.
_BODY_SEMI_MM: Final = (170.0, 120.0)
_MUSCLE_SEMI_MM: Final = (152.0, 104.0)
# Visceral fat, anterior on the patient's left (+x in LPS).
_VISCERAL_FAT_CENTRE_MM: Final = (50.0, -30.0)
_VISCERAL_FAT_SEMI_MM: Final = (45.0, 35.0)
# Vertebral body and spinous process, posterior midline (+y is posterior in LPS).
_VERTEBRA_CENTRE_MM: Final = (0.0, 55.0)
_VERTEBRA_RADIUS_MM: Final = 20.0
_SPINOUS_CENTRE_MM: Final = (0.0, 88.0)
_SPINOUS_SEMI_MM: Final = (6.0, 12.0)
# Liver: an ellipsoid on the patient's right, centred in the cranial third of the scan.
_LIVER_CENTRE_MM: Final = (-70.0, -10.0)
_LIVER_SEMI_MM: Final = (75.0, 70.0)
_LIVER_Z_CENTRE: Final = 0.3  # fraction of the scanned range, from the cranial end
_LIVER_Z_SEMI: Final = 0.25
# Ribs: round cross-sections on an ellipse just inside the muscle wall, crossing the axial
# plane in 10 mm bands every 30 mm, in the cranial 40 % of the scan only.
_RIB_TRACK_SEMI_MM: Final = (140.0, 92.0)
_RIB_ANGLES_DEG: Final = (30.0, 60.0, 120.0, 150.0, 210.0, 240.0, 300.0, 330.0)
_RIB_RADIUS_MM: Final = 6.0
_RIB_PERIOD_MM: Final = 30.0
_RIB_BAND_MM: Final = 10.0
_RIB_Z_END: Final = 0.4


@dataclass(frozen=True, slots=True)
class Grid:
    """Where voxel centres lie: in-plane size and spacing, slice count and thickness."""

    slices: int
    rows: int
    columns: int
    pixel_spacing_mm: float
    slice_thickness_mm: float

    @property
    def origin_mm(self) -> tuple[float, float]:
        """x and y of the first pixel's centre, so that the isocentre is the image centre."""
        return (
            -(self.columns - 1) / 2 * self.pixel_spacing_mm,
            -(self.rows - 1) / 2 * self.pixel_spacing_mm,
        )

    def slice_z_mm(self, index: int) -> float:
        """z of a slice; slice 0 is the most cranial (+z is superior in LPS)."""
        return ((self.slices - 1) / 2 - index) * self.slice_thickness_mm

    @property
    def voxel_ml(self) -> float:
        return self.pixel_spacing_mm**2 * self.slice_thickness_mm / 1000.0


def _ellipse_r2(
    x: FloatMap, y: FloatMap, centre: tuple[float, float], semi: tuple[float, float]
) -> FloatMap:
    """Squared normalised radius: <= 1 inside the ellipse."""
    r2: FloatMap = ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
    return r2


class Anatomy:
    """Labels the slices of one grid; build once, then ask for any slice."""

    __slots__ = ("_base", "_grid", "_liver_r2", "_ribs")

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        x0, y0 = grid.origin_mm
        xs = (x0 + np.arange(grid.columns, dtype=np.float32) * grid.pixel_spacing_mm)[None, :]
        ys = (y0 + np.arange(grid.rows, dtype=np.float32) * grid.pixel_spacing_mm)[:, None]
        x = np.broadcast_to(xs, (grid.rows, grid.columns))
        y = np.broadcast_to(ys, (grid.rows, grid.columns))
        muscle = _ellipse_r2(x, y, (0.0, 0.0), _MUSCLE_SEMI_MM) <= 1.0

        body = _ellipse_r2(x, y, (0.0, 0.0), _BODY_SEMI_MM) <= 1.0
        visceral_fat = _ellipse_r2(x, y, _VISCERAL_FAT_CENTRE_MM, _VISCERAL_FAT_SEMI_MM) <= 1.0
        vertebra = _ellipse_r2(x, y, _VERTEBRA_CENTRE_MM, (_VERTEBRA_RADIUS_MM,) * 2) <= 1.0
        spinous = _ellipse_r2(x, y, _SPINOUS_CENTRE_MM, _SPINOUS_SEMI_MM) <= 1.0

        # Later assignments win: fat under the skin, muscle inside, then organs and bone.
        base = np.full((grid.rows, grid.columns), Tissue.AIR, dtype=np.uint8)
        base[body] = Tissue.FAT
        base[muscle] = Tissue.SOFT_TISSUE
        base[visceral_fat] = Tissue.FAT
        base[vertebra | spinous] = Tissue.BONE
        self._base = base

        # Outside the muscle wall the liver never reaches: an infinite radius keeps it out.
        liver_r2 = _ellipse_r2(x, y, _LIVER_CENTRE_MM, _LIVER_SEMI_MM)
        liver_r2[~muscle | (base == Tissue.BONE) | (base == Tissue.FAT)] = np.inf
        self._liver_r2 = liver_r2

        ribs = np.zeros((grid.rows, grid.columns), dtype=bool)
        for angle in np.deg2rad(_RIB_ANGLES_DEG):
            centre = (
                _RIB_TRACK_SEMI_MM[0] * float(np.cos(angle)),
                _RIB_TRACK_SEMI_MM[1] * float(np.sin(angle)),
            )
            ribs |= _ellipse_r2(x, y, centre, (_RIB_RADIUS_MM,) * 2) <= 1.0
        self._ribs = ribs

    def labels(self, index: int) -> Labels:
        """The label map of slice ``index`` (0 is the most cranial)."""
        grid = self._grid
        labels = self._base.copy()
        depth = (index + 0.5) / grid.slices  # 0 at the cranial end, 1 at the caudal end
        liver_z = 1.0 - ((depth - _LIVER_Z_CENTRE) / _LIVER_Z_SEMI) ** 2
        if liver_z > 0.0:
            labels[self._liver_r2 <= liver_z] = Tissue.LIVER
        distance_mm = index * grid.slice_thickness_mm
        if depth < _RIB_Z_END and distance_mm % _RIB_PERIOD_MM < _RIB_BAND_MM:
            labels[self._ribs] = Tissue.BONE
        return labels
