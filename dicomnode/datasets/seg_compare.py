"""A pipeline's SEG against a reference SEG, segment by segment, on the same source frames.

Both SEGs are read with highdicom, frame by frame through the source images they were
derived from (the SOP Instance UIDs, and frame numbers of a multi-frame source), so the
two masks line up voxel for voxel with the series, whichever frames either SEG left out.

Each segment of the pipeline is found in the reference by its Segmented Property Type
code, else by its Segment Label (its name), else by its number equal to the pipeline's
label: a reference drawn in another tool keeps its own numbering and still matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.datasets.metrics import Mask, dice, volume_difference, volume_ml
from dicomnode.errors import PipelineError
from dicomnode.results.content import SegmentSpec
from dicomnode.volume import SliceRef


@dataclass(frozen=True, slots=True)
class SegmentComparison:
    label: int
    name: str
    dice: float | None
    volumes: dict[str, float | None]  # predicted_ml, reference_ml, difference_ml, relative

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "dice": self.dice, **self.volumes}


def read_reference_seg(path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(path)
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError) as exc:
        raise PipelineError(f"cannot read the reference SEG {path.name}: {exc}") from exc


def compare_segmentations(
    predicted: Dataset | None,
    reference: hd.seg.Segmentation,
    specs: Sequence[SegmentSpec],
    refs: Sequence[SliceRef],
    slice_voxel_ml: npt.NDArray[np.float64],
) -> list[SegmentComparison]:
    """Dice and volumes of each spec's segment; ``predicted`` None: the pipeline found nothing.

    ``refs`` and ``slice_voxel_ml`` are the series' slices in z order (a loaded Volume's).
    PipelineError when the reference SEG was drawn on other images (say, before a
    de-identification that changed the UIDs), which would otherwise read as all empty.
    """
    wanted = {r.sop_instance_uid for r in refs}
    referenced = {str(uid) for _study, _series, uid in reference.get_source_image_uids()}
    if not wanted & referenced:
        raise PipelineError(
            "the reference SEG references none of the series' images (drawn on another "
            "copy of the series, with other UIDs?)"
        )
    seg = None if predicted is None else _as_segmentation(predicted)
    shape = (len(refs), *_frame_shape(reference))
    results = []
    for spec in specs:
        mine = _mask(seg, _own_number(seg, spec), refs, shape)
        theirs = _mask(reference, _reference_number(reference, spec), refs, shape)
        results.append(
            SegmentComparison(
                spec.label,
                spec.name,
                dice(mine, theirs),
                volume_difference(
                    volume_ml(mine, slice_voxel_ml), volume_ml(theirs, slice_voxel_ml)
                ),
            )
        )
    return results


def _as_segmentation(ds: Dataset) -> hd.seg.Segmentation:
    if isinstance(ds, hd.seg.Segmentation):
        return ds
    return hd.seg.Segmentation.from_dataset(ds, copy=False)


def _frame_shape(seg: hd.seg.Segmentation) -> tuple[int, int]:
    return int(seg.Rows), int(seg.Columns)


def _own_number(seg: hd.seg.Segmentation | None, spec: SegmentSpec) -> int | None:
    """dicomnode's SEG labels each segment with its spec's name (results/seg.py)."""
    if seg is None:
        return None
    numbers = [d.segment_number for d in seg.SegmentSequence if d.segment_label == spec.name]
    return numbers[0] if numbers else None


def _reference_number(seg: hd.seg.Segmentation, spec: SegmentSpec) -> int | None:
    descriptions = list(seg.SegmentSequence)
    by_type = [
        d.segment_number
        for d in descriptions
        if (d.segmented_property_type.value, d.segmented_property_type.scheme_designator)
        == (spec.type.value, spec.type.scheme)
    ]
    if len(by_type) == 1:
        return by_type[0]
    by_name = [
        d.segment_number
        for d in descriptions
        if str(d.segment_label).casefold() == spec.name.casefold()
    ]
    if len(by_name) == 1:
        return by_name[0]
    return spec.label if spec.label in seg.segment_numbers else None


def _mask(
    seg: hd.seg.Segmentation | None,
    number: int | None,
    refs: Sequence[SliceRef],
    shape: tuple[int, int, int],
) -> Mask:
    """Segment ``number`` on each of ``refs`` (z, y, x); all empty where it is absent."""
    if seg is None or number is None:
        return np.zeros(shape, dtype=bool)
    if (int(seg.Rows), int(seg.Columns)) != shape[1:]:
        raise PipelineError(
            f"the SEGs' frames differ in size: {seg.Rows}x{seg.Columns} and {shape[1]}x{shape[2]}"
        )
    options: dict[str, Any] = {
        "segment_numbers": [number],
        # dicomnode's SEGs leave out empty frames; other tools omit the (optional)
        # Spatial Locations Preserved attribute that highdicom otherwise insists on.
        "assert_missing_frames_are_empty": True,
        "ignore_spatial_locations": True,
    }
    try:
        if all(r.frame_number is None for r in refs):
            uids = [r.sop_instance_uid for r in refs]
            pixels = seg.get_pixels_by_source_instance(uids, **options)
        elif len({r.sop_instance_uid for r in refs}) == 1:
            frames = [int(r.frame_number or 1) for r in refs]
            pixels = seg.get_pixels_by_source_frame(refs[0].sop_instance_uid, frames, **options)
        else:
            raise PipelineError("a series of several multi-frame images cannot be compared")
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise PipelineError(f"cannot read segment {number} on the series' frames: {exc}") from exc
    mask: Mask = np.asarray(pixels[..., 0]) > 0
    return mask
