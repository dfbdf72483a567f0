"""A dynamic PET series as one volume per time frame, all on one grid.

A dynamic series (PS3.3 C.8.9.1, Series Type ``DYNAMIC\\IMAGE``) repeats the same slice
positions once per time frame, so as one set of files it cannot form a volume: every
position is there Number of Time Slices times. Image Index (PS3.3 C.8.9.4.1.9) says which
frame an image belongs to: (time slice - 1) * Number of Slices + slice. Each frame is
loaded on its own by :func:`dicomnode.pipeline.loading.load_series`, with all its checks,
and the frames must then share one grid.

Times are in seconds from the Series Date and Time (the PET series' reference time):
``frame_seconds`` is each frame's Frame Reference Time (the moment its decay-corrected
values refer to), ``durations_seconds`` its Actual Frame Duration, and ``start_seconds``
its start (Acquisition Date and Time) where the headers give it.

Enhanced (multi-frame) PET objects with a temporal dimension are not read here yet: they
are not dynamic by this module's test, and ``load_series`` refuses the repeated positions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import DA, TM

from dicomnode.config import PipelineLimits
from dicomnode.errors import VolumeError
from dicomnode.pipeline.loading import LoadedSeries, load_series
from dicomnode.volume import Volume

_DEFAULT_LIMITS = PipelineLimits()
_GRID_ATOL_MM = 1e-3  # frames lie on one grid when their affines agree within this
_VOXEL_BYTES = 4  # each frame's volume is float32


@dataclass(frozen=True, slots=True)
class DynamicSeries:
    """The time frames in time order, and when each was acquired."""

    frames: tuple[LoadedSeries, ...]
    frame_seconds: tuple[float, ...]  # Frame Reference Time, from the series time
    durations_seconds: tuple[float, ...]  # Actual Frame Duration
    start_seconds: tuple[float, ...] | None  # Acquisition Date/Time; None where unknown

    @property
    def volumes(self) -> tuple[Volume, ...]:
        return tuple(frame.volume for frame in self.frames)


def is_dynamic(headers: Iterable[Dataset]) -> bool:
    """Whether a series' headers say it is dynamic (Series Type value 1 ``DYNAMIC``)."""
    return any(_series_type(ds) == "DYNAMIC" for ds in headers)


def load_dynamic(
    paths: Sequence[Path], *, limits: PipelineLimits = _DEFAULT_LIMITS
) -> DynamicSeries:
    """Group a dynamic series' images by time frame and load each as a volume.

    Raises :class:`VolumeError` naming the file and attribute where the headers do not
    say which frame an image belongs to, where a frame misses images, where frames lie
    on different grids, or where the whole series is larger than ``limits`` (checked on
    the headers, before any pixel is read).
    """
    images = _image_headers(paths)
    if not images:
        raise VolumeError(f"none of the {len(paths)} files is an image: no series to load")
    first_path, first = images[0]
    if not is_dynamic(ds for _, ds in images):
        raise VolumeError(f"{first_path.name}: Series Type is not DYNAMIC: not a dynamic series")
    slices = _positive_int(first, "NumberOfSlices", first_path)
    time_slices = _positive_int(first, "NumberOfTimeSlices", first_path)
    _require_within(images, limits)
    groups: dict[int, list[tuple[Path, Dataset]]] = {}
    for path, ds in images:
        index = _positive_int(ds, "ImageIndex", path)
        frame = (index - 1) // slices
        if frame >= time_slices:
            raise VolumeError(
                f"{path.name}: ImageIndex {index} is beyond {time_slices} time slices "
                f"of {slices} slices (NumberOfTimeSlices, NumberOfSlices)"
            )
        groups.setdefault(frame, []).append((path, ds))
    missing = [f + 1 for f in range(time_slices) if len(groups.get(f, ())) != slices]
    if missing:
        counts = ", ".join(f"{f}: {len(groups.get(f - 1, ()))}" for f in missing)
        raise VolumeError(
            f"time frames without their {slices} slices (frame: images): {counts}; "
            "the dynamic series is incomplete"
        )
    ordered = [groups[f] for f in range(time_slices)]
    frames = tuple(load_series([p for p, _ in group], limits=limits) for group in ordered)
    _require_one_grid(frames)
    frame_seconds = tuple(_median_ms(g, "FrameReferenceTime") / 1000.0 for g in ordered)
    if any(later <= earlier for earlier, later in pairwise(frame_seconds)):
        raise VolumeError(
            f"Frame Reference Times do not rise with the time slice: {list(frame_seconds)} s"
        )
    return DynamicSeries(
        frames=frames,
        frame_seconds=frame_seconds,
        durations_seconds=tuple(_median_ms(g, "ActualFrameDuration") / 1000.0 for g in ordered),
        start_seconds=_start_seconds(ordered),
    )


def _series_type(ds: Dataset) -> str:
    value = ds.get("SeriesType")
    if not value:
        return ""
    first = value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value
    return str(first).strip().upper()


def _image_headers(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    """Every image's header (non-images, a KOS or a DICOMDIR, skipped), each once."""
    images: list[tuple[Path, Dataset]] = []
    seen: set[str] = set()
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise VolumeError(f"cannot read {path.name} as DICOM: {exc}") from exc
        if "Rows" not in ds:
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            continue  # received twice: the second copy adds nothing
        seen.add(uid)
        images.append((path, ds))
    return images


def _positive_int(ds: Dataset, keyword: str, path: Path) -> int:
    value = ds.get(keyword)
    if not isinstance(value, int) or value < 1:
        raise VolumeError(f"{path.name}: {keyword} is {value!r}, not a positive integer")
    return int(value)


def _require_within(images: Sequence[tuple[Path, Dataset]], limits: PipelineLimits) -> None:
    """All frames together, as their headers claim them, within ``limits``."""
    voxels = sum(int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) for _, ds in images)
    if voxels > limits.max_voxels or voxels * _VOXEL_BYTES > limits.max_bytes:
        raise VolumeError(
            f"the dynamic series would take {voxels} voxels ({voxels * _VOXEL_BYTES} bytes), "
            f"more than the limits of {limits.max_voxels} voxels and {limits.max_bytes} bytes"
        )


def _require_one_grid(frames: Sequence[LoadedSeries]) -> None:
    first = frames[0].volume
    for number, frame in enumerate(frames[1:], start=2):
        volume = frame.volume
        same = volume.shape == first.shape and np.allclose(
            volume.geometry.affine(), first.geometry.affine(), rtol=0.0, atol=_GRID_ATOL_MM
        )
        if not same:
            raise VolumeError(
                f"time frame {number} lies on another grid than time frame 1 "
                f"(shape {volume.shape} vs {first.shape}, or other positions)"
            )


def _median_ms(group: Sequence[tuple[Path, Dataset]], keyword: str) -> float:
    values: list[float] = []
    for path, ds in group:
        value = ds.get(keyword)
        if value is None or value == "":
            raise VolumeError(f"{path.name}: {keyword} is missing; a PET image has it")
        values.append(float(value))
    return statistics.median(values)


def _start_seconds(groups: Sequence[Sequence[tuple[Path, Dataset]]]) -> tuple[float, ...] | None:
    """Each frame's earliest Acquisition Date/Time from the Series Date/Time, if all known."""
    reference = _moment(groups[0][0][1], "SeriesDate", "SeriesTime")
    if reference is None:
        return None
    starts: list[float] = []
    for group in groups:
        moments = [_moment(ds, "AcquisitionDate", "AcquisitionTime") for _, ds in group]
        known = [m for m in moments if m is not None]
        if not known:
            return None
        starts.append((min(known) - reference).total_seconds())
    return tuple(starts)


def _moment(ds: Dataset, date_keyword: str, time_keyword: str) -> datetime | None:
    date, time = ds.get(date_keyword), ds.get(time_keyword)
    if not date or not time:
        return None
    try:
        return datetime.combine(DA(str(date)), TM(str(time)))
    except (TypeError, ValueError):
        return None
