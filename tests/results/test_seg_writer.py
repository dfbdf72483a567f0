"""The SEG writer: valid, aligned with its sources, one segment per label present."""

from __future__ import annotations

import random
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage
from segdecode import decode_labels, frame_sources
from tissues import ALGORITHM, TISSUES, Validator

from dicomnode.errors import ResultError
from dicomnode.phantom import CTPhantomSeries
from dicomnode.results import SegmentSpec, codes, save, write_seg
from dicomnode.results.sources import TYPE2_PATIENT_STUDY
from dicomnode.volume import SliceRef


def refs_of(images: list[Dataset]) -> list[SliceRef]:
    return [SliceRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in images]


def label_of_segment(seg: Dataset, specs: tuple[SegmentSpec, ...]) -> dict[int, int]:
    by_name = {s.name: s.label for s in specs}
    return {int(i.SegmentNumber): by_name[str(i.SegmentLabel)] for i in seg.SegmentSequence}


def test_seg_is_valid_and_decodes_to_the_label_map(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    path = save(seg, tmp_path / "out")
    assert "Segmentation" in dciodvfy(path)

    decoded = decode_labels(path, refs_of(ct_images), label_of_segment(seg, TISSUES))
    np.testing.assert_array_equal(decoded, tissue_labels)


def test_every_frame_references_a_source_image_of_the_series_and_lies_on_it(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    written = pydicom.dcmread(save(seg, tmp_path))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in ct_images}
    for item, (_, ref) in zip(
        written.PerFrameFunctionalGroupsSequence, frame_sources(written), strict=True
    ):
        source = by_uid[ref.sop_instance_uid]  # KeyError: not a source of the series
        assert ref.sop_class_uid == source.SOPClassUID
        position = item.PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in position] == pytest.approx(
            [float(v) for v in source.ImagePositionPatient]
        )
    referenced_series = written.ReferencedSeriesSequence
    assert [str(s.SeriesInstanceUID) for s in referenced_series] == [
        str(ct_images[0].SeriesInstanceUID)
    ]
    assert len(referenced_series[0].ReferencedInstanceSequence) == len(ct_images)


def test_segments_carry_names_codes_algorithm_and_tracking(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    assert len(seg.SegmentSequence) == len(TISSUES)
    for item, spec in zip(seg.SegmentSequence, TISSUES, strict=True):
        assert item.SegmentLabel == spec.name
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == ALGORITHM.name
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == ALGORITHM.name
        assert algorithm.AlgorithmVersion == ALGORITHM.version
        family = algorithm.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == (
            spec.category.value,
            spec.category.scheme,
        )
        assert (kind.CodeValue, kind.CodeMeaning) == (spec.type.value, spec.type.meaning)
        assert item.TrackingID == spec.name
        assert item.TrackingUID
    fat, liver = seg.SegmentSequence[0], seg.SegmentSequence[2]
    assert "RecommendedDisplayCIELabValue" in fat
    assert liver.SegmentDescription == "the phantom liver"


def test_seg_is_a_new_series_in_the_source_study(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    source = ct_images[0]
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.PatientID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesNumber == 101
    assert seg.SegmentationType == "BINARY"
    assert seg.Manufacturer == "dicomnode"
    assert seg.SeriesDescription == "ct-tissue-reference SEG"
    assert seg.ContentLabel == "CT_TISSUE_REFERE"
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)


def test_only_frames_with_pixels_are_written(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    labels = tissue_labels.copy()
    labels[labels == 4] = 0
    labels[2:5][labels[2:5] == 4] = 0
    labels[:3][labels[:3] == 1] = 0  # no fat on the first three slices
    seg = write_seg(ct_images, labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    on_slices = sum(int((labels == s.label).any(axis=(1, 2)).sum()) for s in TISSUES)
    assert seg.NumberOfFrames == on_slices


def test_absent_labels_get_no_segment_and_the_rest_are_numbered_in_order(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    labels = tissue_labels.copy()
    labels[labels == 3] = 2  # liver folded into soft tissue
    seg = write_seg(ct_images, labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    assert [(int(i.SegmentNumber), str(i.SegmentLabel)) for i in seg.SegmentSequence] == [
        (1, "Fat"),
        (2, "Soft tissue"),
        (3, "Bone"),
    ]
    path = save(seg, tmp_path)
    decoded = decode_labels(path, refs_of(ct_images), label_of_segment(seg, TISSUES))
    np.testing.assert_array_equal(decoded, labels)


def test_a_map_with_no_label_present_writes_no_seg(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    empty = np.zeros_like(tissue_labels)
    assert write_seg(ct_images, empty, TISSUES, ALGORITHM, series_number=101) is None


def test_wide_signed_labels_with_gaps_are_renumbered(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    labels = tissue_labels.astype(np.int32)
    labels[labels == 4] = 700
    labels[labels == 1] = 0
    specs = (TISSUES[1], TISSUES[2], SegmentSpec(700, "Bone", codes.TISSUE, codes.BONE))
    seg = write_seg(ct_images, labels, specs, ALGORITHM, series_number=101)
    assert seg is not None
    decoded = decode_labels(save(seg, tmp_path), refs_of(ct_images), label_of_segment(seg, specs))
    np.testing.assert_array_equal(decoded, labels)


def test_a_boolean_mask_is_label_one(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    mask = tissue_labels == 4
    specs = (SegmentSpec(1, "Bone", codes.TISSUE, codes.BONE),)
    seg = write_seg(ct_images, mask, specs, ALGORITHM, series_number=101)
    assert seg is not None
    decoded = decode_labels(save(seg, tmp_path), refs_of(ct_images), {1: 1})
    np.testing.assert_array_equal(decoded, mask.astype(np.int32))


def test_sources_in_any_order_are_aligned_by_refs(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    refs = refs_of(ct_images)
    shuffled = ct_images[:]
    random.Random(4).shuffle(shuffled)
    seg = write_seg(shuffled, tissue_labels, TISSUES, ALGORITHM, series_number=101, refs=refs)
    assert seg is not None
    decoded = decode_labels(save(seg, tmp_path), refs, label_of_segment(seg, TISSUES))
    np.testing.assert_array_equal(decoded, tissue_labels)


def test_sources_read_without_pixel_data_do(
    ct_phantom: CTPhantomSeries,
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_phantom.paths]
    seg = write_seg(headers, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    path = save(seg, tmp_path)
    dciodvfy(path)
    decoded = decode_labels(path, refs_of(ct_images), label_of_segment(seg, TISSUES))
    np.testing.assert_array_equal(decoded, tissue_labels)


def test_de_identified_sources_without_type_2_attributes_work(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    for ds in ct_images:
        for keyword in TYPE2_PATIENT_STUDY:
            delattr(ds, keyword)
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    dciodvfy(save(seg, tmp_path))
    for keyword in TYPE2_PATIENT_STUDY:
        assert keyword in seg
        assert not seg[keyword].value
    assert all(keyword not in ds for ds in ct_images for keyword in TYPE2_PATIENT_STUDY), (
        "the caller's datasets were changed"
    )


def test_a_multiframe_source_in_its_own_frame_order(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(ct_images, hd.UID(), 5, hd.UID(), 1)
    frame_at = {
        float(item.PlanePositionSequence[0].ImagePositionPatient[2]): n
        for n, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence, start=1)
    }
    # The volume runs feet to head here, the frames head to feet: z and frames differ.
    labels = tissue_labels[::-1]
    refs = [
        SliceRef(
            str(enhanced.SOPClassUID),
            str(enhanced.SOPInstanceUID),
            frame_at[float(ds.ImagePositionPatient[2])],
        )
        for ds in reversed(ct_images)
    ]
    assert [r.frame_number for r in refs] == list(range(len(refs), 0, -1))
    seg = write_seg([enhanced], labels, TISSUES, ALGORITHM, series_number=9, refs=refs)
    assert seg is not None
    path = save(seg, tmp_path)
    dciodvfy(path)
    decoded = decode_labels(path, refs, label_of_segment(seg, TISSUES))
    np.testing.assert_array_equal(decoded, labels)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: np.where(a == 2, 9, a), "no segment spec describes: 9"),
        (lambda a: a[:, :32, :], "32x64 but the source images are 64x64"),
        (lambda a: a[:5], "5 slices but 8 source images"),
        (lambda a: a[0], "must be 3-D"),
        (lambda a: a.astype(np.float32), "integer labels"),
    ],
)
def test_a_label_map_that_does_not_fit_is_refused(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    change: object,
    message: str,
) -> None:
    labels = change(tissue_labels)  # type: ignore[operator]
    with pytest.raises(ResultError, match=message):
        write_seg(ct_images, labels, TISSUES, ALGORITHM, series_number=101)


def test_specs_must_have_unique_labels_and_names(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    twice = (*TISSUES, SegmentSpec(5, "Fat", codes.TISSUE, codes.FAT))
    with pytest.raises(ResultError, match="names must be unique: Fat"):
        write_seg(ct_images, tissue_labels, twice, ALGORITHM, series_number=101)


def test_sources_from_two_series_are_refused(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    ct_images[3].SeriesInstanceUID = hd.UID()
    with pytest.raises(ResultError, match="not one series"):
        write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
