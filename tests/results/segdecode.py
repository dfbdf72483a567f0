"""Read a SEG back the way a viewer must: per frame, its segment and its source image.

Independent of the writer and of highdicom's reader: only pydicom, the frame's Referenced
Segment Number and its Derivation Image's Source Image reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from dicomnode.volume import SliceRef


def frame_sources(seg: Dataset) -> list[tuple[int, SliceRef]]:
    """(segment number, source image and frame) of every frame, in frame order."""
    out: list[tuple[int, SliceRef]] = []
    shared = seg.SharedFunctionalGroupsSequence[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        # A macro the same for every frame (one segment, say) moves to the shared groups.
        identification = item.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        number = int(identification[0].ReferencedSegmentNumber)
        derivation = item.get("DerivationImageSequence") or shared.DerivationImageSequence
        source = derivation[0].SourceImageSequence[0]
        frame = source.get("ReferencedFrameNumber")
        out.append(
            (
                number,
                SliceRef(
                    str(source.ReferencedSOPClassUID),
                    str(source.ReferencedSOPInstanceUID),
                    None if frame is None else int(frame),
                ),
            )
        )
    return out


def decode_labels(
    path: Path, slices: list[SliceRef], labels_by_segment: dict[int, int]
) -> npt.NDArray[np.int32]:
    """The label map a SEG file encodes, on the z axis given by ``slices``."""
    seg = pydicom.dcmread(path)
    rows, columns = int(seg.Rows), int(seg.Columns)
    frames = np.asarray(seg.pixel_array).reshape(-1, rows, columns)
    z_of = {(ref.sop_instance_uid, ref.frame_number): z for z, ref in enumerate(slices)}
    out = np.zeros((len(slices), rows, columns), dtype=np.int32)
    for frame, (number, ref) in zip(frames, frame_sources(seg), strict=True):
        z = z_of[(ref.sop_instance_uid, ref.frame_number)]
        mask = frame.astype(bool)
        assert not out[z][mask].any(), "two segments claim the same pixel"
        out[z][mask] = labels_by_segment[number]
    return out
