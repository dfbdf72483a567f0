"""What a pipeline produced, as plain values the SEG and SR writers turn into DICOM.

Every value checks itself on construction, so a bad label, an empty name or a NaN fails
where the pipeline made it, not inside highdicom half-way through a SEG.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dicomnode.results import codes
from dicomnode.results.codes import Code

# PS3.5 6.2: LO (Segment Label, Algorithm Name/Version) holds 64 characters, no backslash.
_LO_MAX: Final = 64
_ST_MAX: Final = 1024  # Segment Description is ST
_LO_TEXT: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]+")
# BINARY SEG segment numbers are US; one segment per label, so labels fit 16 bits.
MAX_LABEL: Final = 0xFFFF


def _check_text(name: str, value: str, limit: int = _LO_MAX) -> None:
    if not _LO_TEXT.fullmatch(value) or len(value) > limit or value != value.strip():
        raise ValueError(
            f"{name} must be 1 to {limit} printable ASCII characters without '\\' or "
            f"surrounding spaces, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """One label of a pipeline's label map and what it means (the SEG's segment)."""

    label: int  # the value in the label map, 1..65535; 0 is background
    name: str  # Segment Label, shown by viewers; also the SR's tracking identifier
    category: Code  # Segmented Property Category (CID 7150), e.g. codes.TISSUE
    type: Code  # Segmented Property Type, e.g. codes.FAT
    description: str | None = None
    color: tuple[int, int, int] | None = None  # sRGB 0..255, for viewers that honour it

    def __post_init__(self) -> None:
        if not 1 <= self.label <= MAX_LABEL:
            raise ValueError(f"segment label must be 1..{MAX_LABEL}, got {self.label}")
        _check_text("segment name", self.name)
        if self.description is not None:
            _check_text("segment description", self.description, _ST_MAX)
        if self.color is not None and (
            len(self.color) != 3 or any(not 0 <= c <= 255 for c in self.color)
        ):
            raise ValueError(f"segment color must be three values 0..255, got {self.color}")


@dataclass(frozen=True, slots=True)
class AlgorithmInfo:
    """The model that produced the results (SEG Segment Algorithm, SR TID 4019)."""

    name: str
    version: str
    family: Code = codes.ARTIFICIAL_INTELLIGENCE  # CID 7162
    source: str | None = None  # who made the model, if not us

    def __post_init__(self) -> None:
        _check_text("algorithm name", self.name)
        _check_text("algorithm version", self.version)
        if self.source is not None:
            _check_text("algorithm source", self.source)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One number with its unit: a TID 300 measurement in the SR."""

    name: Code  # what was measured (CID 7469, CID 7466 ...)
    value: float
    unit: Code  # UCUM
    derivation: Code | None = None  # how it was reduced over the region (CID 7464)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"measurement {self.name.meaning} is not finite: {self.value}")
        if self.unit.scheme != "UCUM":
            raise ValueError(f"measurement units must be UCUM codes, got {self.unit}")

    # The measurements the reference pipelines report, spelled once.
    @classmethod
    def volume_ml(cls, value: float) -> Measurement:
        return cls(codes.VOLUME, value, codes.MILLILITER)

    @classmethod
    def mean_hu(cls, value: float) -> Measurement:
        return cls(codes.ATTENUATION_COEFFICIENT, value, codes.HOUNSFIELD_UNIT, codes.MEAN)

    @classmethod
    def max_hu(cls, value: float) -> Measurement:
        return cls(codes.ATTENUATION_COEFFICIENT, value, codes.HOUNSFIELD_UNIT, codes.MAXIMUM)

    @classmethod
    def suv_mean(cls, value: float) -> Measurement:
        return cls(codes.SUVBW, value, codes.SUVBW_UNIT, codes.MEAN)

    @classmethod
    def suv_max(cls, value: float) -> Measurement:
        return cls(codes.SUVBW, value, codes.SUVBW_UNIT, codes.MAXIMUM)

    @classmethod
    def metabolic_volume_ml(cls, value: float) -> Measurement:
        return cls(codes.METABOLIC_VOLUME, value, codes.MILLILITER)

    @classmethod
    def total_lesion_glycolysis(cls, value: float) -> Measurement:
        """SUVmean x MTV: (g/ml) x ml, so grams."""
        return cls(codes.TOTAL_LESION_GLYCOLYSIS, value, codes.GRAM)


@dataclass(frozen=True, slots=True)
class SegmentMeasurements:
    """The measurements of one segment, named by its label."""

    label: int
    measurements: Sequence[Measurement] = ()  # kept as a tuple

    def __post_init__(self) -> None:
        if not 1 <= self.label <= MAX_LABEL:
            raise ValueError(f"segment label must be 1..{MAX_LABEL}, got {self.label}")
        object.__setattr__(self, "measurements", tuple(self.measurements))


@dataclass(frozen=True, slots=True)
class Finding:
    """A classifier's answer about the whole series: a finding and its probability."""

    finding: Code  # e.g. Code("50960005", "SCT", "Hemorrhage")
    probability: float  # 0..1
    threshold: float = 0.5  # at or above it the finding is reported present

    def __post_init__(self) -> None:
        for name in ("probability", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"finding {name} must be within 0..1, got {value}")

    @property
    def present(self) -> bool:
        return self.probability >= self.threshold
