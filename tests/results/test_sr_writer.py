"""The SR writer: a valid TID 1500 report that references the SEG and the sources, OHIF-safe."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from polygons import filled
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import Comprehensive3DSRStorage
from tissues import ALGORITHM, TISSUES, Validator

from dicomnode.errors import ResultError
from dicomnode.results import (
    Code,
    Finding,
    Measurement,
    SegmentMeasurements,
    codes,
    save,
    write_seg,
    write_sr,
)
from dicomnode.results.labelmap import LabelMap
from dicomnode.results.ohif import ohif_view
from dicomnode.results.sources import TYPE2_PATIENT_STUDY, prepare_sources
from dicomnode.volume import SliceRef

ALGORITHM_NAME = dicom_codes.DCM.AlgorithmName
HEMORRHAGE = Code("50960005", "SCT", "Hemorrhage")
MEASURED = (
    SegmentMeasurements(1, [Measurement.volume_ml(812.5), Measurement.mean_hu(-98.5)]),
    SegmentMeasurements(4, [Measurement.volume_ml(55.25), Measurement.max_hu(1210.0)]),
)


def evaluations(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[tuple[str, str]]:
    """(name, value) of the group's qualitative evaluations (not its algorithm family)."""
    return [
        (e.name.meaning, e.value.meaning)
        for e in group.get_qualitative_evaluations()
        if e.name != dicom_codes.DCM.AlgorithmFamily
    ]


def segment_report(
    images: list[Dataset], labels: npt.NDArray[np.uint8], **extra: object
) -> tuple[Dataset, Dataset]:
    seg = write_seg(images, labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    sr = write_sr(
        images,
        seg,
        labels,
        TISSUES,
        ALGORITHM,
        series_number=102,
        measurements=MEASURED,
        **extra,  # type: ignore[arg-type]
    )
    return seg, sr


def test_sr_is_valid_and_a_new_series_in_the_source_study(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    seg, sr = segment_report(ct_images, tissue_labels)
    path = save(sr, tmp_path)
    assert "Comprehensive3DSR" in dciodvfy(path)
    written = pydicom.dcmread(path)
    assert written.SOPClassUID == Comprehensive3DSRStorage
    assert written.StudyInstanceUID == ct_images[0].StudyInstanceUID
    assert written.SeriesInstanceUID not in {ct_images[0].SeriesInstanceUID, seg.SeriesInstanceUID}
    assert written.SeriesNumber == 102
    assert written.SeriesDescription == "ct-tissue-reference SR"
    assert written.CompletionFlag == "COMPLETE"
    assert written.VerificationFlag == "UNVERIFIED"
    title = written.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("126000", "DCM")


def test_each_segment_has_a_volumetric_group_with_its_measurements(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    seg, sr = segment_report(ct_images, tissue_labels)
    parsed = hd.sr.Comprehensive3DSR.from_dataset(sr)
    groups = parsed.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [s.name for s in TISSUES]
    by_name = {g.tracking_identifier: g for g in groups}

    fat = by_name["Fat"]
    volume, mean = fat.get_measurements()
    assert (volume.name.value, volume.value, volume.unit.value) == ("118565006", 812.5, "ml")
    # Named by the statistic (OHIF shows only the concept's meaning), in HU.
    assert (mean.name.meaning, mean.value, mean.unit.value) == ("Mean", -98.5, "[hnsf'U]")
    assert mean.derivation == dicom_codes.SCT.Mean
    bone_max = by_name["Bone"].get_measurements()[1]
    assert (bone_max.value, bone_max.derivation) == (1210.0, dicom_codes.SCT.Maximum)
    assert by_name["Liver"].get_measurements() == []  # nothing was measured for it

    for group, spec, item in zip(groups, TISSUES, seg.SegmentSequence, strict=True):
        assert group.finding_type.value == spec.type.value
        assert group.finding_category is not None
        assert group.finding_category.value == spec.category.value
        assert group.tracking_uid == item.TrackingUID  # the SEG's segment, tracked
        referenced = group.referenced_segment
        assert referenced is not None
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [item.SegmentNumber]
        source_series = referenced.source_series_for_segmentation
        assert source_series is not None
        assert source_series.value == ct_images[0].SeriesInstanceUID
        algorithm = [i.value for i in group[0].ContentSequence if i.name == ALGORITHM_NAME]
        assert algorithm == [ALGORITHM.name]


def test_each_segment_also_has_its_outline_on_its_largest_slice(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    _, sr = segment_report(ct_images, tissue_labels)
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    planar = report.get_planar_roi_measurement_groups()
    assert [g.tracking_uid for g in planar] == [g.tracking_uid for g in volumetric]
    for group, spec in zip(planar, TISSUES, strict=True):
        mask = tissue_labels == spec.label
        z = int(np.argmax(mask.sum(axis=(1, 2))))
        region = group.roi
        assert region is not None
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == ct_images[z].SOPInstanceUID
        points = region.value
        assert points[0].tolist() == points[-1].tolist()  # closed
        assert 6 <= len(points) <= 256  # a contour, never OHIF's 4- or 5-point rectangle
        # The outline runs along the segment's pixel edges: each vertex is a corner of
        # one of its pixels (a bounding box's corners mostly are not), and it encloses
        # the segment's largest blob.
        padded = np.pad(mask[z], 1)
        for x, y in points.astype(int).tolist():
            assert padded[y : y + 2, x : x + 2].any(), (spec.name, x, y)
        enclosed = filled(points, mask[z].shape)
        assert (enclosed & mask[z]).sum() >= 0.5 * mask[z].sum()
        assert group.tracking_identifier == spec.name
        assert group.get_measurements() == []  # the values are the volume's: TID 1411


def test_no_group_leaves_ohif_without_a_region_to_draw(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    _, sr = segment_report(ct_images, tissue_labels)
    view = ohif_view(sr)
    assert view.problems == ()
    drawn = {m.tracking_id: m for m in view.measurements if m.graphic_type is not None}
    assert set(drawn) == {s.name for s in TISSUES}
    source_uids = {str(ds.SOPInstanceUID) for ds in ct_images}
    assert all(m.referenced_sop_instance_uid in source_uids for m in drawn.values())
    # OHIF draws the contour with the SR's own values beside it, and hydrates nothing
    # into a tool that would replace them with statistics of its own.
    assert drawn["Fat"].text_lines == (
        "Volume: 812.50 ml",
        "Mean: -98.50 [hnsf'U]",
    )
    assert all(m.graphic_type == "POLYLINE" and m.points > 5 for m in drawn.values())
    assert all(m.hydrated_as is None for m in view.measurements)
    # Every NUM also stands alone: a reader that does not merge groups finds content.
    for group in sr.ContentSequence[-1].ContentSequence:
        for item in group.ContentSequence:
            if item.ValueType == "NUM":
                assert "ContentSequence" in item


def test_the_ohif_model_catches_a_group_that_only_references_a_segment(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    """The shape the issue warns of, built with plain highdicom, fails the model."""
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Fat"),
        referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, 1),
        measurements=[
            hd.sr.Measurement(dicom_codes.SCT.Volume, 1.0, hd.sr.CodedConcept("ml", "UCUM", "ml"))
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=dicom_codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
        referenced_images=ct_images[:1],
    )
    sr = hd.sr.Comprehensive3DSR([*ct_images, seg], report, hd.UID(), 1, hd.UID(), 1)
    (problem,) = ohif_view(sr).problems
    assert "'Fat': no SCOORD" in problem


def test_the_ohif_model_catches_a_box_that_ohif_hydrates_as_a_rectangle(
    ct_images: list[Dataset],
) -> None:
    """The shape the issue reported (a 5-point box) becomes OHIF's RectangleROI."""
    box = np.array([[1, 1], [9, 1], [9, 9], [1, 9], [1, 1]], dtype=np.float32)
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Fat"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=box,
            source_image=hd.sr.SourceImageForRegion.from_source_image(ct_images[0]),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=dicom_codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
        referenced_images=ct_images[:1],
    )
    sr = hd.sr.Comprehensive3DSR(ct_images, report, hd.UID(), 1, hd.UID(), 1)
    view = ohif_view(sr)
    (problem,) = view.problems
    assert "'Fat' as RectangleROI" in problem
    assert view.measurements[0].hydrated_as == "RectangleROI"


def test_a_classifier_finding_is_a_qualitative_evaluation_with_its_probability(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    findings = [Finding(HEMORRHAGE, 0.93), Finding(codes.LESION, 0.2)]
    _, sr = segment_report(ct_images, tissue_labels, findings=findings)
    dciodvfy(save(sr, tmp_path))
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    groups = report.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Hemorrhage", "Lesion"]
    for group, finding, verdict in zip(groups, findings, ("Present", "Absent"), strict=True):
        assert evaluations(group) == [(finding.finding.meaning, verdict)]
        (probability,) = group.get_measurements()
        assert (probability.name.meaning, probability.value) == ("Probability", finding.probability)
        assert probability.unit.value == "1"


def test_a_classifier_without_a_label_map_reports_only_its_findings(
    ct_images: list[Dataset], tmp_path: Path, dciodvfy: Validator
) -> None:
    sr = write_sr(
        ct_images, None, None, (), ALGORITHM, series_number=7, findings=[Finding(HEMORRHAGE, 0.6)]
    )
    dciodvfy(save(sr, tmp_path))
    view = ohif_view(sr)
    assert [m.tracking_id for m in view.measurements] == ["Hemorrhage"]
    # Known limit of OHIF 3.13.2: a finding with no region stops its loading of the SR.
    (problem,) = view.problems
    assert "'Hemorrhage': no SCOORD" in problem


def test_nothing_found_writes_no_seg_and_an_sr_that_says_so(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    nothing = np.zeros_like(tissue_labels)
    seg = write_seg(ct_images, nothing, TISSUES, ALGORITHM, series_number=101)
    assert seg is None
    sr = write_sr(ct_images, seg, nothing, TISSUES, ALGORITHM, series_number=102)
    path = save(sr, tmp_path)
    dciodvfy(path)
    written = pydicom.dcmread(path)
    # Known limit of OHIF 3.13.2: a finding with no region stops its loading of the SR
    # (here there is nothing to draw anyway).
    (problem,) = ohif_view(written).problems
    assert "'Not found': no SCOORD" in problem
    (group,) = hd.sr.Comprehensive3DSR.from_dataset(written).content.get_image_measurement_groups()
    assert group.tracking_identifier == "Not found"
    assert evaluations(group) == [(s.type.meaning, "Absent") for s in TISSUES]
    evidence = written.CurrentRequestedProcedureEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence
    assert [s.SeriesInstanceUID for s in series] == [ct_images[0].SeriesInstanceUID]


def test_a_configured_segment_that_is_absent_is_stated_absent(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    labels = tissue_labels.copy()
    labels[labels == 3] = 2
    measurements = [SegmentMeasurements(3, [Measurement.volume_ml(0.0)])]  # left out: absent
    seg = write_seg(ct_images, labels, TISSUES, ALGORITHM, series_number=101)
    sr = write_sr(
        ct_images, seg, labels, TISSUES, ALGORITHM, series_number=102, measurements=measurements
    )
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in volumetric] == ["Fat", "Soft tissue", "Bone"]
    assert report.get_image_measurement_groups() == []  # no group without a region
    dciodvfy(save(sr, tmp_path))
    # TID 1500's own Qualitative Evaluations, which OHIF does not read: it shows the
    # present findings as if nothing were absent, rather than stopping on a group
    # that has no region.
    (evaluated,) = [i for i in sr.ContentSequence if _meaning(i) == "Qualitative Evaluations"]
    assert [
        (_meaning(i), i.ConceptCodeSequence[0].CodeMeaning) for i in evaluated.ContentSequence
    ] == [("Liver", "Absent")]
    view = ohif_view(sr)
    assert view.problems == ()
    assert [m.tracking_id for m in view.measurements] == ["Fat", "Soft tissue", "Bone"]


def _meaning(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


def test_pet_measurements_carry_suv_and_ucum_units(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    lesion = (TISSUES[3],)
    mask = (tissue_labels == 4).astype(np.uint8) * 4
    pet = [
        Measurement.suv_max(7.5),
        Measurement.suv_mean(3.25),
        Measurement.metabolic_volume_ml(12.0),
        Measurement.total_lesion_glycolysis(39.0),
    ]
    seg = write_seg(ct_images, mask, lesion, ALGORITHM, series_number=101)
    sr = write_sr(
        ct_images,
        seg,
        mask,
        lesion,
        ALGORITHM,
        series_number=102,
        measurements=[SegmentMeasurements(4, pet)],
    )
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    (group,) = report.get_volumetric_roi_measurement_groups()
    found = [
        (m.name.meaning, m.value, m.unit.value, m.derivation and m.derivation.meaning)
        for m in group.get_measurements()
    ]
    assert found == [
        ("Maximum", 7.5, "g/ml{SUVbw}", "Maximum"),
        ("Mean", 3.25, "g/ml{SUVbw}", "Mean"),
        ("Metabolic Volume", 12.0, "ml", None),
        ("Total Lesion Glycolysis", 39.0, "g", None),
    ]
    (shown,) = ohif_view(sr).measurements
    assert shown.text_lines == (  # what OHIF 3.13.2 writes beside the lesion's contour
        "Maximum: 7.50 g/ml{SUVbw}",
        "Mean: 3.25 g/ml{SUVbw}",
        "Metabolic Volume: 12.00 ml",
        "Total Lesion Glycolysis: 39.00 g",
    )
    assert shown.graphic_type == "POLYLINE" and shown.points > 5 and shown.hydrated_as is None


def test_de_identified_sources_give_a_valid_report(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    for ds in ct_images:
        for keyword in TYPE2_PATIENT_STUDY:
            delattr(ds, keyword)
    seg, sr = segment_report(ct_images, tissue_labels)
    dciodvfy(save(seg, tmp_path))
    dciodvfy(save(sr, tmp_path))
    assert all(keyword in sr and not sr[keyword].value for keyword in TYPE2_PATIENT_STUDY)


def test_a_multiframe_source_gets_frame_references(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(ct_images, hd.UID(), 5, hd.UID(), 1)
    refs = [
        SliceRef(str(enhanced.SOPClassUID), str(enhanced.SOPInstanceUID), n)
        for n in range(1, len(ct_images) + 1)
    ]
    seg = write_seg([enhanced], tissue_labels, TISSUES, ALGORITHM, series_number=9, refs=refs)
    sr = write_sr([enhanced], seg, tissue_labels, TISSUES, ALGORITHM, series_number=10, refs=refs)
    dciodvfy(save(sr, tmp_path))
    assert ohif_view(sr).problems == ()
    planar = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    for group, spec in zip(planar, TISSUES, strict=True):
        z = int(np.argmax((tissue_labels == spec.label).sum(axis=(1, 2))))
        reference = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        assert reference.ReferencedFrameNumber == z + 1


@pytest.mark.parametrize(
    ("measurements", "message"),
    [
        ([SegmentMeasurements(9, [Measurement.volume_ml(1.0)])], "label 9, which no segment"),
        (
            [SegmentMeasurements(1, []), SegmentMeasurements(1, [])],
            "two sets of measurements for label 1",
        ),
    ],
)
def test_measurements_must_name_a_configured_segment_once(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    measurements: list[SegmentMeasurements],
    message: str,
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    with pytest.raises(ResultError, match=message):
        write_sr(
            ct_images,
            seg,
            tissue_labels,
            TISSUES,
            ALGORITHM,
            series_number=102,
            measurements=measurements,
        )


def test_a_seg_of_another_label_map_is_refused(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    other = tissue_labels.copy()
    other[other == 1] = 0
    seg = write_seg(ct_images, other, TISSUES, ALGORITHM, series_number=101)
    with pytest.raises(ResultError, match="does not match the label map"):
        write_sr(ct_images, seg, tissue_labels, TISSUES, ALGORITHM, series_number=102)
    with pytest.raises(ResultError, match="no SEG was given"):
        write_sr(ct_images, None, tissue_labels, TISSUES, ALGORITHM, series_number=102)


def test_a_label_map_and_sources_prepared_once_serve_the_seg_and_the_sr(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    """What the pipeline does: check, count and align once, for both writers."""
    refs = [SliceRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in ct_images]
    label_map = LabelMap.of(tissue_labels, TISSUES)
    sources = prepare_sources(list(reversed(ct_images)), label_map.depth, refs)
    seg = write_seg(sources, label_map, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    sr = write_sr(
        sources, seg, label_map, TISSUES, ALGORITHM, series_number=102, measurements=MEASURED
    )
    dciodvfy(save(seg, tmp_path))
    dciodvfy(save(sr, tmp_path))
    separate_seg, separate_sr = segment_report(ct_images, tissue_labels)
    assert [i.SegmentLabel for i in seg.SegmentSequence] == [
        i.SegmentLabel for i in separate_seg.SegmentSequence
    ]
    assert seg.NumberOfFrames == separate_seg.NumberOfFrames
    assert seg.PixelData == separate_seg.PixelData
    assert len(sr.ContentSequence) == len(separate_sr.ContentSequence)


def test_a_label_map_or_sources_prepared_for_something_else_are_refused(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    label_map = LabelMap.of(tissue_labels, TISSUES)
    with pytest.raises(ResultError, match="checked against other segment specs"):
        write_seg(ct_images, label_map, TISSUES[:1], ALGORITHM, series_number=101)
    sources = prepare_sources(ct_images[1:], len(ct_images) - 1)
    with pytest.raises(ResultError, match="sources were prepared for"):
        write_seg(sources, label_map, TISSUES, ALGORITHM, series_number=101)
    sources = prepare_sources(ct_images, label_map.depth)
    refs = [SliceRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in ct_images]
    with pytest.raises(ResultError, match="prepared for other slice references"):
        write_seg(sources, label_map, TISSUES, ALGORITHM, series_number=101, refs=refs[::-1])
