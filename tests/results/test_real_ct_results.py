"""SEG and SR from the real Philips CT series: valid, aligned, referencing its images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from segdecode import decode_labels, frame_sources
from tissues import ALGORITHM, Validator

from dicomnode.results import (
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
    codes,
    save,
    write_seg,
    write_sr,
)
from dicomnode.results.ohif import ohif_view
from dicomnode.volume import SliceRef

SPECS = (
    SegmentSpec(1, "Fat", codes.TISSUE, codes.FAT),
    SegmentSpec(2, "Soft tissue", codes.TISSUE, codes.SOFT_TISSUE),
    SegmentSpec(3, "Bone", codes.TISSUE, codes.BONE),
)


@pytest.mark.filterwarnings('ignore:The string "HEAD" is unlikely:UserWarning')  # the real name
def test_seg_and_sr_of_the_real_ct_are_valid_and_aligned(
    real_ct_images: list[Path], tmp_path: Path, dciodvfy: Validator
) -> None:
    images = [pydicom.dcmread(p) for p in real_ct_images]
    normal = np.cross(*np.reshape([float(v) for v in images[0].ImageOrientationPatient], (2, 3)))
    images.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in images]
    )
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(hu >= -190) & (hu <= -30)] = 1
    labels[(hu > -30) & (hu <= 150)] = 2
    labels[hu >= 300] = 3
    voxel_ml = float(images[0].PixelSpacing[0]) * float(images[0].PixelSpacing[1])
    voxel_ml *= float(images[0].SliceThickness) / 1000.0
    measurements = [
        SegmentMeasurements(
            s.label,
            [
                Measurement.volume_ml(float((labels == s.label).sum()) * voxel_ml),
                Measurement.mean_hu(float(hu[labels == s.label].mean())),
            ],
        )
        for s in SPECS
        if (labels == s.label).any()
    ]

    seg = write_seg(images, labels, SPECS, ALGORITHM, series_number=1001)
    assert seg is not None
    sr = write_sr(
        images, seg, labels, SPECS, ALGORITHM, series_number=1002, measurements=measurements
    )
    seg_path, sr_path = save(seg, tmp_path), save(sr, tmp_path)
    dciodvfy(seg_path)
    dciodvfy(sr_path)

    refs = [SliceRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in images]
    series_uids = {r.sop_instance_uid for r in refs}
    written = pydicom.dcmread(seg_path)
    assert all(ref.sop_instance_uid in series_uids for _, ref in frame_sources(written))
    by_name = {s.name: s.label for s in SPECS}
    segment_labels = {int(i.SegmentNumber): by_name[i.SegmentLabel] for i in seg.SegmentSequence}
    np.testing.assert_array_equal(decode_labels(seg_path, refs, segment_labels), labels)

    view = ohif_view(pydicom.dcmread(sr_path))
    assert view.problems == ()
    assert {m.tracking_id for m in view.measurements if m.graphic_type} == {
        str(i.SegmentLabel) for i in seg.SegmentSequence
    }
    # Each finding as OHIF 3.13.2 shows it: the region's contour (not a 5-point box,
    # which it would hydrate into a RectangleROI) on a source image, with the SR's own
    # volume and mean beside it.
    names = {s.label: s.name for s in SPECS}
    expected = {names[m.label]: m.measurements for m in measurements}
    for shown in view.measurements:
        assert shown.hydrated_as is None
        assert shown.graphic_type == "POLYLINE" and 5 < shown.points <= 256
        assert shown.referenced_sop_instance_uid in series_uids
        volume, mean = expected[shown.tracking_id]
        assert shown.text_lines == (
            f"Volume: {volume.value:.2f} ml",
            f"Mean: {mean.value:.2f} [hnsf'U]",
        )
