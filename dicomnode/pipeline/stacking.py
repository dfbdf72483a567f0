"""Frames into one regular stack along the slice normal, or a refusal that says why.

A volume is only correct if every frame has the same size, orientation and pixel spacing,
and the positions lie on one line at one spacing along the slice normal. That line is the
normal itself, or, for a gantry-tilted acquisition, a line sheared from it: each slice is
offset in its own plane by the same amount per mm along the normal. A sheared stack is
kept as acquired (its geometry records the shear, so every slice keeps its true position
and voxel volumes stay dz * dy * dx, dz along the normal). Each check below refuses what
would otherwise become a silently wrong volume: a missing slice (the spacing would be
wrong past it; where asked, unevenly spaced slices are taken, each measured with its
own thickness), positions on no one line (neither stacked nor
sheared), a second stack or a repeated acquisition (two slices at one position), a
localizer in the series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from dicomnode.errors import VolumeError
from dicomnode.pipeline.frames import Frame, Orientation
from dicomnode.volume import Geometry

T = TypeVar("T")
V = TypeVar("V", bound=tuple[float, ...])

# Direction cosines are written with a few decimals; 1e-3 is ~0.06 degrees.
ORIENTATION_TOLERANCE: Final = 1e-3
# Positions closer than this along the normal are one position; DS values carry ~0.01 mm.
SAME_POSITION_MM: Final = 0.01
PIXEL_SPACING_TOLERANCE: Final = 1e-3  # relative


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far a real series may depart from an ideal stack and still form one volume."""

    spacing: float = 0.01  # relative: each gap may differ this much from the median gap
    lateral: float = 0.1  # in pixels: how far a slice may lie off the normal through slice 1

    def __post_init__(self) -> None:
        if not (0 < self.spacing < 1):
            raise ValueError(f"spacing tolerance must be in (0, 1), got {self.spacing}")
        if self.lateral <= 0:
            raise ValueError(f"lateral tolerance must be positive, got {self.lateral}")


@dataclass(frozen=True, slots=True)
class Stack:
    """The frames' order along the normal (indices into the input) and the grid they span."""

    order: tuple[int, ...]
    geometry: Geometry


def stack(
    frames: Sequence[Frame],
    names: Sequence[str],
    tolerances: Tolerances,
    *,
    irregular: bool = False,
) -> Stack:
    """Sort ``frames`` along the slice normal and check they form one regular grid.

    With ``irregular``, slices at uneven distances along the line are accepted: the
    geometry then records each slice's offset.
    ``names[frame.source]`` names each frame's file in messages.
    """
    if not frames:
        raise VolumeError("the series has no image to form a volume from")
    _require_geometry(frames, names)
    _require_one_size(frames)
    _require_grey(frames, names)
    orientation = _one_orientation(frames)
    pixel_spacing = _one_pixel_spacing(frames)
    row, column, normal = _directions(orientation)

    positions = np.array([f.position for f in frames], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions = positions[order]
    sorted_frames = [frames[i] for i in order]

    shear = np.zeros(3)
    offsets: tuple[float, ...] | None = None
    if len(frames) == 1:
        spacing_z = frames[0].slice_thickness or 1.0
    else:
        _refuse_same_positions(sorted_frames, along, names)
        shear = _shear(positions, along, normal, min(pixel_spacing), tolerances.lateral)
        try:
            spacing_z = _regular_spacing(np.diff(along), tolerances.spacing)
        except VolumeError:
            if not irregular:
                raise
            spacing_z = float(np.median(np.diff(along)))
            offsets = tuple(float(v) for v in along - along[0])

    origin = positions[0]
    return Stack(
        order=tuple(int(i) for i in order),
        geometry=Geometry(
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            row_direction=_tuple3(row),
            column_direction=_tuple3(column),
            slice_direction=_tuple3(normal),
            spacing=(spacing_z, pixel_spacing[0], pixel_spacing[1]),
            shear=_tuple3(shear),
            slice_offsets=offsets,
        ),
    )


def _require_geometry(frames: Sequence[Frame], names: Sequence[str]) -> None:
    missing = {
        "ImagePositionPatient": [f for f in frames if f.position is None],
        "ImageOrientationPatient": [f for f in frames if f.orientation is None],
        "PixelSpacing": [f for f in frames if f.pixel_spacing is None],
    }
    problems = [
        f"missing {keyword} in {len(bad)} of {_count(len(frames), 'image')} "
        f"(e.g. {_where(bad[0], names)})"
        for keyword, bad in missing.items()
        if bad
    ]
    if problems:
        raise VolumeError("; ".join(problems) + ": the slices cannot be placed in space")


def _require_grey(frames: Sequence[Frame], names: Sequence[str]) -> None:
    for frame in frames:
        if frame.samples_per_pixel != 1 or not frame.photometric_interpretation.startswith(
            "MONOCHROME"
        ):
            raise VolumeError(
                f"{_where(frame, names)} is not a grey-scale image "
                f"({frame.photometric_interpretation}, {frame.samples_per_pixel} samples "
                "per pixel): a volume holds one value per voxel"
            )


def _require_one_size(frames: Sequence[Frame]) -> None:
    sizes: dict[tuple[int, int], int] = {}
    for frame in frames:
        key = (frame.rows, frame.columns)
        sizes[key] = sizes.get(key, 0) + 1
    if len(sizes) > 1:
        shown = _groups(sizes, lambda size: f"{size[0]}x{size[1]}")
        raise VolumeError(f"slices have different sizes (rows x columns): {shown}")


def _one_orientation(frames: Sequence[Frame]) -> Orientation:
    groups = _cluster([f.orientation for f in frames if f.orientation], ORIENTATION_TOLERANCE)
    if len(groups) > 1:
        shown = {tuple(round(v, 4) + 0.0 for v in o): n for o, n in groups.items()}
        raise VolumeError(
            "several orientations in one series (several stacks, or a localizer?): "
            f"ImageOrientationPatient {_groups(shown, _cosines)}"
        )
    return next(iter(groups))


def _one_pixel_spacing(frames: Sequence[Frame]) -> tuple[float, float]:
    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing]
    groups = _cluster(spacings, PIXEL_SPACING_TOLERANCE, relative=True)
    if len(groups) > 1:
        raise VolumeError(f"slices have different pixel spacings: {_groups(groups, _mm)}")
    return next(iter(groups))


def _directions(
    orientation: Orientation,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    row = np.array(orientation[:3], dtype=np.float64)
    column = np.array(orientation[3:], dtype=np.float64)
    row_norm, column_norm = float(np.linalg.norm(row)), float(np.linalg.norm(column))
    if abs(row_norm - 1) > 0.01 or abs(column_norm - 1) > 0.01:
        raise VolumeError(
            f"ImageOrientationPatient {_cosines(orientation)} is not made of unit vectors"
        )
    row, column = row / row_norm, column / column_norm
    if abs(float(row @ column)) > 0.01:
        raise VolumeError(
            f"ImageOrientationPatient {_cosines(orientation)}: rows and columns are not "
            "perpendicular"
        )
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal)


def _refuse_same_positions(
    frames: Sequence[Frame], along: npt.NDArray[np.float64], names: Sequence[str]
) -> None:
    same = np.flatnonzero(np.diff(along) < SAME_POSITION_MM)
    if same.size == 0:
        return
    i = int(same[0])
    raise VolumeError(
        f"duplicated slice positions: {_where(frames[i], names)} and "
        f"{_where(frames[i + 1], names)} lie at the same position ({along[i]:.2f} mm along "
        f"the normal), {_count(same.size, 'pair')} in all: several stacks, a repeated "
        "acquisition or a dynamic series cannot form one volume"
    )


def _shear(
    positions: npt.NDArray[np.float64],
    along: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    pixel_mm: float,
    tolerance_px: float,
) -> npt.NDArray[np.float64]:
    """The in-plane offset per mm along the normal (zero for a plain stack), or a refusal.

    Positions within ``tolerance_px`` of the normal through the first are a plain stack.
    Otherwise they must lie, within the same tolerance, on one line sheared from it (a
    gantry tilt: the least-squares shear through the first position).
    """
    steps = along - along[0]
    lateral = (positions - positions[0]) - np.outer(steps, normal)
    limit = tolerance_px * pixel_mm
    off_normal = np.linalg.norm(lateral, axis=1)
    if float(off_normal.max()) <= limit:
        return np.zeros(3)
    shear: npt.NDArray[np.float64] = (steps @ lateral) / float(steps @ steps)
    shear -= (shear @ normal) * normal  # in-plane, whatever rounding the positions carry
    residual = np.linalg.norm(lateral - np.outer(steps, shear), axis=1)
    worst = int(np.argmax(residual))
    if residual[worst] > limit:
        raise VolumeError(
            "slice positions lie on no one line: slice "
            f"{worst + 1} is {residual[worst]:.2f} mm off the line through the others, more "
            f"than {tolerance_px:g} pixels (neither a stack along the slice normal nor a "
            f"gantry tilt, which offsets every slice alike; largest offset from the normal "
            f"{float(off_normal.max()):.2f} mm)"
        )
    return shear


def _regular_spacing(gaps: npt.NDArray[np.float64], tolerance: float) -> float:
    """The median gap, if every gap is within ``tolerance`` of it."""
    spacing = float(np.median(gaps))
    deviation = np.abs(gaps - spacing)
    bad = np.flatnonzero(deviation > tolerance * spacing)
    if bad.size:
        i = int(bad[np.argmax(deviation[bad])])
        hint = "a missing slice?" if gaps[i] > spacing else "an extra or overlapping slice?"
        raise VolumeError(
            f"irregular slice spacing: {spacing:.3g} mm expected, {gaps[i]:.3g} mm between "
            f"slices {i + 1} and {i + 2} ({hint}); {bad.size} of {gaps.size} gaps differ "
            f"by more than {tolerance:.0%}"
        )
    return spacing


def _cluster(values: Sequence[V], tolerance: float, *, relative: bool = False) -> dict[V, int]:
    """Values grouped with their first member when within ``tolerance``; member counts."""
    groups: dict[V, int] = {}
    for value in values:
        for head in groups:
            limit = tolerance * max(abs(v) for v in head) if relative else tolerance
            if max(abs(a - b) for a, b in zip(value, head, strict=True)) <= limit:
                groups[head] += 1
                break
        else:
            groups[value] = 1
    return groups


def _groups(groups: dict[T, int], show: Callable[[T], str]) -> str:
    """``a (27 slices) and b (1 slice)``, the largest group first."""
    parts = [
        f"{show(value)} ({_count(n, 'slice')})"
        for value, n in sorted(groups.items(), key=lambda item: -item[1])
    ]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _where(frame: Frame, names: Sequence[str]) -> str:
    name = names[frame.source]
    return name if frame.frame_number is None else f"{name} frame {frame.frame_number}"


def _mm(value: tuple[float, ...]) -> str:
    return "x".join(f"{v:g}" for v in value) + " mm"


def _cosines(value: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in value) + "]"


def _tuple3(vector: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return (float(vector[0]), float(vector[1]), float(vector[2]))
