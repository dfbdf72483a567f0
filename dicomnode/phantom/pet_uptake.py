"""Where the PET phantom's tracer is: the SUV of every voxel, how it is stored, what it sums to.

Body-weight SUV as QIBA defines it, for images with Units BQML and Decay Correction START
(PS3.3 C.8.9.1.1.4: pixel values are decay corrected to the Series Date and Time)::

    SUVbw = C * W / (A * exp(-ln(2) * (SeriesTime - RadiopharmaceuticalStartTime) / T))

with ``C`` the pixel value in Bq/ml (stored value times Rescale Slope, intercept 0), ``W``
the Patient Weight in grams, ``A`` the Radionuclide Total Dose in Bq and ``T`` the
Radionuclide Half Life in seconds. SUV is in g/ml, so SUV times ml is grams: TLG = SUVmean
times MTV.

The truth is measured on the values a reader decodes (stored integers times slope, back
to SUV), not on the nominal SUVs, so quantisation never makes a pipeline disagree with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from pydicom.valuerep import DSfloat

from dicomnode.phantom.anatomy import Grid

Stored = npt.NDArray[np.int16]
FloatMap = npt.NDArray[np.float64]

DEFAULT_SUV_THRESHOLD: Final = 2.5
STORED_MAX: Final = 2**15 - 1  # signed 16 bits, as PET scanners store
_SLOPE_DIGITS: Final = 6  # significant digits of a slope: a short DS, and the peak still fits
# A voxel this close to the threshold (relative) would fall either side of it depending on
# rounding in the reader, so such a threshold has no single answer and is refused.
_AMBIGUOUS_RELATIVE: Final = 1e-4


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """The fraction of the activity left after ``elapsed_s``: exp(-ln 2 * t / T)."""
    return math.exp(-math.log(2) * elapsed_s / half_life_s)


def bqml_per_suv(
    patient_weight_kg: float, injected_dose_bq: float, elapsed_s: float, half_life_s: float
) -> float:
    """Activity concentration in Bq/ml of SUV 1, ``elapsed_s`` after the injection."""
    return injected_dose_bq * decay_factor(elapsed_s, half_life_s) / (patient_weight_kg * 1000)


def ds_value(value: float) -> DSfloat:
    """A DS value within the 16 characters PS3.5 allows, whatever the float."""
    return DSfloat(value, auto_format=True)


@dataclass(frozen=True, slots=True)
class Lesion:
    """A sphere of uniform uptake; where lesions overlap, the later one wins."""

    centre_mm: tuple[float, float, float]  # patient LPS; the isocentre is the image centre
    radius_mm: float
    suv: float

    def __post_init__(self) -> None:
        if len(self.centre_mm) != 3 or not all(math.isfinite(c) for c in self.centre_mm):
            raise ValueError(f"centre_mm must be three finite numbers, got {self.centre_mm}")
        if not math.isfinite(self.radius_mm) or self.radius_mm <= 0:
            raise ValueError(f"radius_mm must be positive and finite, got {self.radius_mm}")
        if not math.isfinite(self.suv) or self.suv < 0:
            raise ValueError(f"suv must not be negative and must be finite, got {self.suv}")


class Uptake:
    """Nominal SUVs: a uniform elliptic cylinder of body with spheres in it.

    No blur and no noise, so every voxel holds the body's SUV, a lesion's, or 0 (air).
    Build once, then ask for any slice.
    """

    __slots__ = ("_base", "_grid", "_lesions", "_x", "_y")

    def __init__(
        self,
        grid: Grid,
        body_semi_axes_mm: tuple[float, float],
        body_suv: float,
        lesions: tuple[Lesion, ...],
    ) -> None:
        x0, y0 = grid.origin_mm
        self._grid = grid
        self._lesions = lesions
        self._x = (x0 + np.arange(grid.columns) * grid.pixel_spacing_mm)[None, :]
        self._y = (y0 + np.arange(grid.rows) * grid.pixel_spacing_mm)[:, None]
        semi_x, semi_y = body_semi_axes_mm
        body = (self._x / semi_x) ** 2 + (self._y / semi_y) ** 2 <= 1.0
        self._base: FloatMap = np.where(body, body_suv, 0.0)

    def suv(self, index: int) -> FloatMap:
        """Slice ``index`` (0 is the most cranial), each lesion cut as a disc."""
        z = self._grid.slice_z_mm(index)
        suv = self._base.copy()
        for lesion in self._lesions:
            cx, cy, cz = lesion.centre_mm
            disc_r2 = lesion.radius_mm**2 - (z - cz) ** 2
            if disc_r2 >= 0:
                suv[(self._x - cx) ** 2 + (self._y - cy) ** 2 <= disc_r2] = lesion.suv
        return suv


def quantise(bqml: FloatMap) -> tuple[Stored, DSfloat]:
    """Stored values and Rescale Slope of a slice: its peak near the top of 16 bits.

    The decoded value is off by at most half a slope, i.e. the slice's peak / 65534.
    """
    peak = float(bqml.max())
    # Rounding the slope to 6 digits moves the peak by at most 5e-6 of 32767: it still fits.
    slope = ds_value(float(f"{peak / STORED_MAX:.{_SLOPE_DIGITS}g}") if peak > 0 else 1.0)
    stored = np.rint(bqml / float(slope))
    np.clip(stored, 0, STORED_MAX, out=stored)
    return stored.astype(np.int16), slope


def decode_suv(stored: Stored, slope: DSfloat, bqml_per_suv: float) -> FloatMap:
    """SUV as a reader gets it: stored * slope (+ intercept 0) in Bq/ml, then SUVbw."""
    bqml: FloatMap = stored.astype(np.float64) * float(slope)
    return bqml / bqml_per_suv


@dataclass(frozen=True, slots=True)
class PETTruth:
    """The region SUV >= ``threshold`` over the whole series (not split into lesions).

    ``suv_max`` and ``suv_mean`` are 0 where the region is empty, so truths compare equal.
    """

    threshold: float
    voxels: int
    mtv_ml: float  # metabolic tumour volume
    suv_max: float
    suv_mean: float
    tlg: float  # total lesion glycolysis in g: suv_mean * mtv_ml


class SUVTally:
    """Accumulates the thresholded region, one slice of decoded SUVs at a time."""

    __slots__ = ("_max", "_sum", "_threshold", "_voxels")

    def __init__(self, threshold: float = DEFAULT_SUV_THRESHOLD) -> None:
        # Zero or less would count the air around the body.
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive SUV, got {threshold}")
        self._threshold = threshold
        self._voxels = 0
        self._sum = 0.0
        self._max = 0.0

    def add(self, suv: FloatMap) -> None:
        threshold = self._threshold
        if np.any(np.abs(suv - threshold) <= _AMBIGUOUS_RELATIVE * threshold):
            raise ValueError(
                f"threshold {threshold} must differ from every voxel's SUV by more than "
                f"{_AMBIGUOUS_RELATIVE:.0e} relative: choose one between the phantom's SUVs"
            )
        region = suv[suv >= threshold]
        if region.size:
            self._voxels += int(region.size)
            self._sum += float(region.sum())
            self._max = max(self._max, float(region.max()))

    def truth(self, voxel_ml: float) -> PETTruth:
        mtv_ml = self._voxels * voxel_ml
        mean = self._sum / self._voxels if self._voxels else 0.0
        return PETTruth(
            threshold=self._threshold,
            voxels=self._voxels,
            mtv_ml=mtv_ml,
            suv_max=self._max,
            suv_mean=mean,
            tlg=mean * mtv_ml,
        )
