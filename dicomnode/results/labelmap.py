"""The label map a pipeline produced, checked against its segment specs and measured.

Counting each label's pixels on every slice says which segments are present (a SEG holds
only those), where each one is largest (the slice the SR's image region goes on), and
whether the map holds a value no spec describes (refused: it would be silently dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ResultError
from dicomnode.results.content import SegmentSpec

LabelArray = npt.NDArray[Any]  # (z, y, x) of an integer (or bool) dtype
SegArray = npt.NDArray[np.unsignedinteger[Any]]  # uint8 or uint16

_SHOWN_UNKNOWN: Final = 10


@dataclass(frozen=True, slots=True)
class SegmentPixels:
    """A segment that is present: its spec, its SEG segment number and pixels per slice."""

    spec: SegmentSpec
    number: int  # 1-based, in order of label: the SEG's Segment Number
    areas: npt.NDArray[np.intp]  # pixel count on each z index

    @property
    def slices(self) -> list[int]:
        """The z indices the segment is on."""
        return [int(z) for z in np.flatnonzero(self.areas)]

    @property
    def largest_slice(self) -> int:
        """The z index where the segment covers the most pixels (the first of equals)."""
        return int(np.argmax(self.areas))


@dataclass(frozen=True, slots=True)
class LabelMap:
    """A checked label map: which specs are present, which absent."""

    array: LabelArray
    present: tuple[SegmentPixels, ...]  # by label
    absent: tuple[SegmentSpec, ...]  # configured, but no pixel carries the label

    @classmethod
    def of(cls, labels: LabelArray | LabelMap, specs: Sequence[SegmentSpec]) -> LabelMap:
        """Check ``labels`` (z, y, x) against ``specs`` and count each label's pixels.

        A LabelMap made for the same specs is returned as it is: the SEG and the SR of
        one run share one (counting a 300-slice map takes a tenth of a second or more).
        """
        if isinstance(labels, LabelMap):
            made_for = {p.spec for p in labels.present} | set(labels.absent)
            if made_for != set(specs) or len(specs) != len(made_for):
                raise ResultError("the label map was checked against other segment specs")
            return labels
        check_specs(specs)
        array = np.asarray(labels)
        if array.ndim != 3:
            raise ResultError(f"the label map must be 3-D (z, y, x), got shape {array.shape}")
        if array.dtype == np.bool_:
            array = array.view(np.uint8)
        if not np.issubdtype(array.dtype, np.integer):
            raise ResultError(f"the label map must hold integer labels, got {array.dtype}")
        if 0 in array.shape:
            raise ResultError(f"the label map is empty: shape {array.shape}")
        areas_of = _areas_by_bincount if array.dtype == np.uint8 else _areas_by_comparison
        areas = areas_of(array, specs)
        present: list[SegmentPixels] = []
        absent: list[SegmentSpec] = []
        for spec in sorted(specs, key=lambda s: s.label):
            if areas[spec.label].any():
                present.append(SegmentPixels(spec, len(present) + 1, areas[spec.label]))
            else:
                absent.append(spec)
        return cls(array=array, present=tuple(present), absent=tuple(absent))

    @property
    def depth(self) -> int:
        return int(self.array.shape[0])

    def segment_numbers(self) -> SegArray:
        """The map with each label replaced by its SEG segment number (1..n), unsigned.

        highdicom reads a label map as segment numbers and wants all of 1..max described;
        absent labels leave gaps, so the present ones are renumbered. When they already
        are 1..n in an unsigned array, the array is passed through without a copy.
        """
        labels = [p.spec.label for p in self.present]
        dtype = np.uint8 if len(labels) < 256 else np.uint16
        if labels == list(range(1, len(labels) + 1)) and self.array.dtype in (
            np.uint8,
            np.uint16,
        ):
            return self.array
        lookup: SegArray = np.zeros(max(labels) + 1, dtype=dtype)
        for item in self.present:
            lookup[item.spec.label] = item.number
        numbers: SegArray = lookup[self.array]
        return numbers

    def bounding_box(self, segment: SegmentPixels, z: int) -> tuple[int, int, int, int]:
        """(first row, last row, first column, last column) of the segment on slice z."""
        mask = self.array[z] == segment.spec.label
        rows = np.flatnonzero(mask.any(axis=1))
        columns = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ResultError(f"segment {segment.spec.name!r} is not on slice {z}")
        return int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])


def check_specs(specs: Sequence[SegmentSpec]) -> None:
    """One spec per label and per name: names become segment labels and tracking ids."""
    for attribute in ("label", "name"):
        values = [getattr(s, attribute) for s in specs]
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ResultError(f"segment {attribute}s must be unique: {', '.join(repeated)}")


def _areas_by_bincount(
    array: LabelArray, specs: Sequence[SegmentSpec]
) -> dict[int, npt.NDArray[np.intp]]:
    """Pixels per slice of each spec's label, for 8-bit maps: one bincount per slice."""
    counts = np.stack([np.bincount(plane.ravel(), minlength=256) for plane in array])
    known = {0, *(s.label for s in specs)}
    unknown = [v for v in np.flatnonzero(counts.any(axis=0)) if int(v) not in known]
    if unknown:
        raise ResultError(_unknown_message(unknown))
    empty = np.zeros(array.shape[0], dtype=np.intp)
    return {s.label: counts[:, s.label] if s.label < 256 else empty for s in specs}


def _areas_by_comparison(
    array: LabelArray, specs: Sequence[SegmentSpec]
) -> dict[int, npt.NDArray[np.intp]]:
    """Pixels per slice of each spec's label, one comparison per label (wider dtypes).

    Counting per label keeps memory at one boolean copy of the map; a ``bincount`` of
    the whole map would first copy it to 64-bit integers, and its length follows the
    largest value present, however large.
    """
    largest = np.iinfo(array.dtype).max
    areas: dict[int, npt.NDArray[np.intp]] = {}
    counted = 0
    for spec in specs:
        if spec.label > largest:
            areas[spec.label] = np.zeros(array.shape[0], dtype=np.intp)
            continue
        areas[spec.label] = np.count_nonzero(array == spec.label, axis=(1, 2))
        counted += int(areas[spec.label].sum())
    if np.count_nonzero(array) != counted:
        known = np.asarray([0, *(s.label for s in specs)])
        raise ResultError(_unknown_message(np.unique(array[~np.isin(array, known)])))
    return areas


def _unknown_message(values: Sequence[Any] | npt.NDArray[Any]) -> str:
    shown = ", ".join(str(int(v)) for v in values[:_SHOWN_UNKNOWN])
    more = f" and {len(values) - _SHOWN_UNKNOWN} more" if len(values) > _SHOWN_UNKNOWN else ""
    return f"the label map holds values no segment spec describes: {shown}{more}"
