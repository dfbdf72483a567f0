"""Each 2-D image of a series as its header places it: a single-frame file or one frame.

Single-frame images carry their geometry and rescale at the top level (PS3.3 C.7.6.2 Image
Plane, C.11.1 Modality LUT). Enhanced multi-frame images (Enhanced CT/MR/PET, the legacy
converted ones) carry them per frame in functional groups (PS3.3 C.7.6.16): a Per-frame
item overrides the Shared one. Classic multi-frame images (NM, US, XA) give no position per
frame, so their frames cannot be placed in space and are refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicomnode.errors import VolumeError

Vector = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Frame:
    """One 2-D image, with the header values that place it and scale its pixels."""

    source: int  # index of its instance among the series' image instances
    frame_number: int | None  # 1-based within a multi-frame instance, None for single-frame
    sop_class_uid: str
    sop_instance_uid: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric_interpretation: str
    position: Vector | None  # ImagePositionPatient
    orientation: Orientation | None  # ImageOrientationPatient
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) in mm
    slice_thickness: float | None
    slope: float
    intercept: float


def number_of_frames(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames")
    return int(value) if value not in (None, "") else 1


def is_enhanced(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def frames_of(ds: Dataset, source: int, name: str) -> list[Frame]:
    """The frames of one image instance, in their stored order; ``name`` is for messages."""
    frames = number_of_frames(ds)
    if is_enhanced(ds):
        return _enhanced_frames(ds, source, frames, name)
    if frames > 1:
        raise VolumeError(
            f"{name} is a multi-frame image ({frames} frames) without per-frame positions "
            "(no Per-frame Functional Groups with a Plane Position Sequence, PS3.3 C.7.6.16): "
            "its frames cannot be placed in space"
        )
    return [
        Frame(
            source=source,
            frame_number=None,
            **_common(ds),
            position=_vector(ds.get("ImagePositionPatient")),
            orientation=_orientation(ds.get("ImageOrientationPatient")),
            pixel_spacing=_pair(ds.get("PixelSpacing")),
            slice_thickness=_number(ds.get("SliceThickness")),
            slope=_rescale(ds.get("RescaleSlope"), "RescaleSlope", 1.0, name),
            intercept=_rescale(ds.get("RescaleIntercept"), "RescaleIntercept", 0.0, name),
        )
    ]


def functional_group_item(ds: Dataset, per_frame: Dataset | None, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` for one frame: its Per-frame group, else the Shared."""
    for group in (per_frame, _shared(ds)):
        if group is not None and sequence in group and len(group[sequence].value) > 0:
            item: Dataset = group[sequence].value[0]
            return item
    return None


def _shared(ds: Dataset) -> Dataset | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    return shared[0] if shared else None


def _enhanced_frames(ds: Dataset, source: int, frames: int, name: str) -> list[Frame]:
    per_frame: Sequence[Dataset] = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != frames:
        raise VolumeError(
            f"{name} has {frames} frames but {len(per_frame)} Per-frame Functional Groups items"
        )
    common = _common(ds)
    out: list[Frame] = []
    for index in range(frames):
        group = per_frame[index] if per_frame else None
        position = functional_group_item(ds, group, "PlanePositionSequence")
        plane = functional_group_item(ds, group, "PlaneOrientationSequence")
        measures = functional_group_item(ds, group, "PixelMeasuresSequence")
        rescale = functional_group_item(ds, group, "PixelValueTransformationSequence")
        out.append(
            Frame(
                source=source,
                frame_number=index + 1,
                **common,
                position=_vector(_get(position, "ImagePositionPatient")),
                orientation=_orientation(_get(plane, "ImageOrientationPatient")),
                pixel_spacing=_pair(_get(measures, "PixelSpacing")),
                slice_thickness=_number(_get(measures, "SliceThickness")),
                # Enhanced MR may have no rescale at all: stored values are the values.
                slope=_rescale(_get(rescale, "RescaleSlope"), "RescaleSlope", 1.0, name),
                intercept=_rescale(
                    _get(rescale, "RescaleIntercept"), "RescaleIntercept", 0.0, name
                ),
            )
        )
    return out


def _common(ds: Dataset) -> dict[str, Any]:
    return {
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1)),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
    }


def _get(item: Dataset | None, keyword: str) -> Any:
    return None if item is None else item.get(keyword)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` numbers from a DS value, or None where absent or malformed."""
    if value is None or value == "":
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _vector(value: Any) -> Vector | None:
    numbers = _floats(value, 3)
    return None if numbers is None else (numbers[0], numbers[1], numbers[2])


def _orientation(value: Any) -> Orientation | None:
    n = _floats(value, 6)
    return None if n is None else (n[0], n[1], n[2], n[3], n[4], n[5])


def _pair(value: Any) -> tuple[float, float] | None:
    numbers = _floats(value, 2)
    return None if numbers is None else (numbers[0], numbers[1])


def _number(value: Any) -> float | None:
    """A DS/IS value as float; None where absent, empty or malformed."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rescale(value: Any, keyword: str, default: float, name: str) -> float:
    """A rescale value; a malformed one is refused, it would scale every pixel wrongly."""
    if value is None or value == "":
        return default
    number = _number(value)
    if number is None:
        raise VolumeError(f"{name} has a malformed {keyword}: {value!r}")
    return number
