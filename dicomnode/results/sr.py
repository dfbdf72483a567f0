"""The TID 1500 Measurement Report, in a Comprehensive 3D SR (PS3.16 TID 1500, PS3.3 A.35.13).

The shape of the report, and why
================================

Per present segment, **two measurement groups that share one tracking identifier** (the
segment's name, and the Tracking UID its SEG segment carries):

1. TID 1411 *Volumetric ROI*: the Referenced Segment (the SEG instance and segment
   number, with the source series it segments), the finding category and type (the
   segment's codes), the algorithm (TID 4019), and the measurements (TID 300, UCUM
   units: volume in ml, mean/max in HU or SUVbw, MTV, TLG ...). They are the volume's
   values, so they stay here and nowhere else.
2. TID 1410 *Planar ROI*: an Image Region, a closed POLYLINE along the *outline* of the
   segment's largest blob on the slice where its area is largest (geometric purpose
   "Bounded by"; :mod:`~dicomnode.results.contour`, at most 256 points), referencing
   that source image (and frame); the same finding codes and algorithm.

Why two groups: TID 1410/1411 let a group name its region in exactly one way (Image
Region, Referenced Segment or Volume Surface; highdicom enforces it), so one group cannot
carry both the segment and an image region.

Why this shows the AI's values in OHIF 3.13.2 (read in its ``cornerstone-dicom-sr``
extension and ``@cornerstonejs/adapters``; modelled in :mod:`~dicomnode.results.ohif`):
``getSopClassHandlerModule`` merges the groups that share a Tracking Unique Identifier;
a merged finding with an SCOORD is drawn from its first SCOORD on the image it names, and
labelled with every NUM of the merged groups as "<concept>: <value> <UCUM code>". Its
``DICOMSRDisplayTool`` draws the outline with those labels beside it (five lines at
most). So each finding appears at its region with the volume's values. What must be
avoided is *hydration* (``isRehydratable``, ``hydrateStructuredReport``): outside its
"standard" mode OHIF at once turns every finding that a Cornerstone adapter claims into
an editable tool, and those list their own statistics of the pixels under the graphic.
The adapters claim a finding by a ``cornerstone3DTools@^0.1.0:<Tool>`` Tracking
Identifier (ours is the segment's name) or by its graphic: a POLYLINE of 4 or 5 points
is a RectangleROI (``RectangleROI.isValidMeasurement``), a POINT a Probe. The box this
report once drew had 5 points: OHIF hydrated it, showed the box's own mean instead of
the SR's, and logged a TypeError ("reading 'ValueType'") for every group without an
SCOORD while searching each group's adapter. An outline never has 4 or 5 points, so
nothing is hydrated and no adapter runs. Every NUM also carries its algorithm
identification (TID 300 allows TID 4019), so a reader that takes groups one by one finds
a ``ContentSequence`` on it.

Classifier findings (whole-series, no region) are TID 1501 groups: a qualitative
evaluation (finding: Present/Absent at the finding's threshold) and its probability
(unit "1"), with their own tracking identifier. They have no region, and OHIF 3.13.2
cannot open an SR whose findings have none (seen in the browser, as an unhandled
rejection and a black viewport): placing the SR's findings, it reads the first coordinate
of an empty list (``_checkIfCanAddMeasurementsToDisplaySet``); and an SR without any
measurement group fails one step later, where the SR viewport reads its first finding
(``_getViewportReferencedDisplaySetData``). So no "Imaging Measurement Report" without a
region opens there (OHIF shows an SR of another title as text, but no other title of
CID 7021 fits a CT report); the same holds for the "Not found" group below. Other viewers and
validators read both. (The browser test keeps both cases as expected failures.)

Configured segments that are absent are stated as TID 1500's own Qualitative
Evaluations (row 12: a CODE "<segment type>: Absent" each), beside the Imaging
Measurements and not in them, so OHIF never meets a finding without a region there.
When a pipeline finds nothing at all (no SEG, no classifier finding), one TID 1501 group
tracked as "Not found" says it instead ("Finding: Absent" when no segment was
configured): highdicom builds no report without a group. OHIF has nothing to draw then;
it stops on that group as on a classifier's.

Source images are referenced three ways: each Image Region names the image (and frame)
it is drawn on, the Image Library lists those images, and the SR's evidence (Current
Requested Procedure Evidence) lists every source image and the SEG. The segment
references name the source *series* rather than each of its images: 300 slices times a
few segments of "Source image for segmentation" items made the SR twenty times slower to
build and write, and TID 1411 allows either. Measurements of a label that is absent are
left out: there is nothing to measure and no region to show them on.

A statistic of a quantity over the region (a mean, a maximum) is a NUM named by the
statistic, SCT "Mean" (373098007) or "Maximum" (56851009) from CID 7464, in the quantity's
UCUM unit ("[hnsf'U]", "g/ml{SUVbw}"), with the same code as its Derivation (the TID 1419
modifier). The usual TID 1419 form names the quantity ("Attenuation Coefficient", "SUVbw")
and puts the statistic only in the Derivation; OHIF labels a NUM by its concept's Code
Meaning alone, so a mean and a maximum of one quantity showed as two identical names,
and a Code Meaning may not be reworded to say more than its code means. Cornerstone's own
TID 300 encoders write "Mean"/"Maximum" the same way, and dciodvfy and PixelMed's
DicomSRValidator accept it with no error and no added warning. The unit still says what
was measured (HU, SUVbw); a reader that wants the quantity's concept does not find it.
OHIF prints the unit's UCUM code ("ml", "[hnsf'U]", "g/ml{SUVbw}", "g").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from dicomnode.errors import ResultError
from dicomnode.results import codes, identity, tables
from dicomnode.results.coding import coded
from dicomnode.results.content import (
    AlgorithmInfo,
    Finding,
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
)
from dicomnode.results.contour import outline
from dicomnode.results.labelmap import LabelArray, LabelMap, SegmentPixels, check_specs
from dicomnode.results.prior import PriorResult, predecessor_datasets
from dicomnode.results.provenance import Provenance
from dicomnode.results.sources import SliceReference, Sources, prepare_sources

NOT_FOUND_ID: Final = "Not found"
_QUALITATIVE_EVALUATIONS: Final = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
_PROCEDURES: Final = {
    "CT": codes.CT_PROCEDURE,
    "MR": codes.MR_PROCEDURE,
    "PT": codes.PET_PROCEDURE,
}

Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def write_sr(
    sources: Sequence[Dataset] | Sources,
    seg: Dataset | None,
    labels: LabelArray | LabelMap | None,
    segments: Sequence[SegmentSpec],
    algorithm: AlgorithmInfo,
    *,
    series_number: int,
    measurements: Sequence[SegmentMeasurements] = (),
    findings: Sequence[Finding] = (),
    refs: Sequence[SliceReference] | None = None,
    replaces: Sequence[PriorResult] = (),
    provenance: Provenance | None = None,
) -> Dataset:
    """The measurement report of one pipeline run over ``sources``.

    ``seg`` is what :func:`~dicomnode.results.seg.write_seg` returned for the same
    ``labels`` and ``segments`` (None when nothing was present); ``labels`` may be None
    for a pipeline without a label map (a classifier). ``refs`` as for ``write_seg``.
    ``replaces``: the results of an earlier version of the series; their SRs become this
    report's Predecessor Documents (:mod:`~dicomnode.results.prior`). ``provenance`` as
    for ``write_seg``.
    """
    tables.prepare()
    if labels is None:
        check_specs(segments)
        label_map = None
        present: tuple[SegmentPixels, ...] = ()
        absent = tuple(segments)
    else:
        label_map = LabelMap.of(labels, segments)
        present, absent = label_map.present, label_map.absent
    src = prepare_sources(sources, None if label_map is None else label_map.depth, refs)
    seg_items = _check_seg(seg, present, src)
    by_label = _measurements_by_label(measurements, segments)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        family=coded(algorithm.family),
        manufacturer=algorithm.source,
        parameters=None if provenance is None else provenance.sr_parameters(),
    )

    groups: list[Group] = []
    if seg is not None and label_map is not None:
        for segment, seg_item in zip(present, seg_items, strict=True):
            tracking_uid = str(seg_item.get("TrackingUID") or identity.new_uid())
            numbers = by_label.get(segment.spec.label, ())
            groups.append(_volumetric(segment, seg, src, tracking_uid, numbers, algorithm_id))
            for z in _region_slices(segment, len(present)):
                groups.append(_planar(segment, z, label_map, src, tracking_uid, algorithm_id))
    groups.extend(_classified(finding, algorithm_id) for finding in findings)
    evaluated_absent = bool(absent and groups)  # said beside the groups (see the docstring)
    if not groups:
        groups.append(_not_found(absent, algorithm_id))

    evidence = [*src.images, *([seg] if seg is not None else [])]
    try:
        report = hd.sr.MeasurementReport(
            observation_context=_observation_context(algorithm),
            procedure_reported=coded(_PROCEDURES.get(src.modality, codes.IMAGING_PROCEDURE)),
            imaging_measurements=groups,
        )
        _add_image_library(report, label_map, src)
        if evaluated_absent:
            _add_absent_evaluations(report, absent)
        return hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=identity.new_uid(),
            series_number=series_number,
            sop_instance_uid=identity.new_uid(),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            is_complete=True,
            is_final=False,  # a model's output, not yet read by a radiologist
            is_verified=False,
            series_description=identity.truncated(f"{algorithm.name} SR"),
            manufacturer_model_name=identity.MODEL_NAME,
            software_versions=identity.SOFTWARE_VERSION,
            device_serial_number=identity.DEVICE_SERIAL_NUMBER,
            previous_versions=predecessor_datasets(replaces),
            contributing_equipment=None if provenance is None else [provenance.equipment()],
        )
    except (ValueError, AttributeError, KeyError) as exc:  # highdicom's refusals
        raise ResultError(f"the SR could not be built: {exc}") from exc


def _add_image_library(
    report: hd.sr.MeasurementReport, label_map: LabelMap | None, src: Sources
) -> None:
    """The Image Library (TID 1600): the images the report's regions lie on.

    A report without regions (nothing found, a classifier) is about the whole series, so
    its library lists every source image. Entries carry no descriptors (TID 1601/1602 are
    optional): highdicom's own library reads Pixel Spacing at the top level, which
    multi-frame images lack, and its descriptors made the SR of a 300-slice series ten
    times slower to build; every entry costs, which is why only region images are listed
    when there are regions (the SR's evidence lists all sources anyway). OHIF reads only
    the entries' references, and older 3.x releases throw when the library is absent, so
    it is always there, in its TID 1500 place before Imaging Measurements.
    """
    group = hd.sr.ContainerContentItem(
        name=dicom_codes.DCM.ImageLibraryGroup,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group.ContentSequence = hd.sr.ContentSequence()
    if label_map is not None and label_map.present:
        present = label_map.present
        zs = list(dict.fromkeys(z for p in present for z in _region_slices(p, len(present))))
    else:
        zs = list(range(len(src.slices)))
    entries: dict[str, list[int]] = {}  # SOP Instance UID: frame numbers
    for z in zs:
        entries.setdefault(src.slices[z].sop_instance_uid, []).extend(src.frames_at([z]) or [])
    for image in src.images:
        if str(image.SOPInstanceUID) not in entries:
            continue
        group.ContentSequence.append(
            hd.sr.ImageContentItem(
                name=dicom_codes.SCT.Source,
                referenced_sop_class_uid=str(image.SOPClassUID),
                referenced_sop_instance_uid=str(image.SOPInstanceUID),
                referenced_frame_numbers=sorted(entries[str(image.SOPInstanceUID)]) or None,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    library = hd.sr.ContainerContentItem(
        name=dicom_codes.DCM.ImageLibrary,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    library.ContentSequence = hd.sr.ContentSequence([group])
    content = report[0].ContentSequence
    position = next(
        i for i, item in enumerate(content) if item.name == dicom_codes.DCM.ImagingMeasurements
    )
    content.insert(position, library)


def _add_absent_evaluations(report: hd.sr.MeasurementReport, absent: Sequence[SegmentSpec]) -> None:
    """TID 1500's Qualitative Evaluations (row 12): "<segment type>: Absent", per type.

    OHIF 3.13.2 reads only Imaging Measurements, where a group without a region stops its
    loading of the SR's findings; here the statement stays out of its way.
    """
    container = hd.sr.ContainerContentItem(
        name=_QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.CodeContentItem(
                name=coded(name),
                value=coded(codes.ABSENT),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for name in dict.fromkeys(spec.type for spec in absent)
        ]
    )
    report[0].ContentSequence.append(container)


def _check_seg(
    seg: Dataset | None, present: tuple[SegmentPixels, ...], src: Sources
) -> list[Dataset]:
    """The SEG's segment items, one per present segment, after checking they match."""
    if seg is None:
        if present:
            raise ResultError("the label map has segments but no SEG was given")
        return []
    items = list(seg.get("SegmentSequence", []))
    expected = [(p.number, p.spec.name) for p in present]
    found = [(int(i.SegmentNumber), str(i.SegmentLabel)) for i in items]
    if found != expected:
        raise ResultError(
            f"the SEG does not match the label map: it has segments {found}, "
            f"the label map {expected}"
        )
    if str(seg.StudyInstanceUID) != src.study_instance_uid:
        raise ResultError("the SEG belongs to another study than the source images")
    return items


def _measurements_by_label(
    measurements: Sequence[SegmentMeasurements], segments: Sequence[SegmentSpec]
) -> dict[int, tuple[Measurement, ...]]:
    known = {s.label for s in segments}
    by_label: dict[int, tuple[Measurement, ...]] = {}
    for item in measurements:
        if item.label not in known:
            raise ResultError(f"measurements for label {item.label}, which no segment has")
        if item.label in by_label:
            raise ResultError(f"two sets of measurements for label {item.label}")
        by_label[item.label] = tuple(item.measurements)
    return by_label


def _observation_context(algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid(algorithm),
        name=algorithm.name,
        manufacturer_name=identity.MANUFACTURER,
        model_name=identity.truncated(f"{algorithm.name} {algorithm.version}"),
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dicom_codes.DCM.Device,
            observer_identifying_attributes=device,
        )
    )


def _tracking(uid: str, identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=uid, identifier=identifier)


def _number(
    measurement: Measurement, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.Measurement:
    # A statistic is named by the statistic, so that viewers tell a mean from a maximum
    # (see the docstring); the Derivation repeats it in TID 1419's own terms.
    name = measurement.name if measurement.derivation is None else measurement.derivation
    return hd.sr.Measurement(
        name=coded(name),
        value=measurement.value,
        unit=coded(measurement.unit),
        derivation=None if measurement.derivation is None else coded(measurement.derivation),
        algorithm_id=algorithm_id,  # gives the NUM a ContentSequence: see the docstring
    )


def _volumetric(
    segment: SegmentPixels,
    seg: Dataset,
    src: Sources,
    tracking_uid: str,
    measurements: tuple[Measurement, ...],
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=segment.number,
        source_series=hd.sr.SourceSeriesForSegmentation(src.series_instance_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(tracking_uid, segment.spec.name),
        referenced_segment=referenced,
        finding_type=coded(segment.spec.type),
        finding_category=coded(segment.spec.category),
        algorithm_id=algorithm_id,
        measurements=[_number(m, algorithm_id) for m in measurements] or None,
    )


def _region_slices(segment: SegmentPixels, present: int) -> list[int]:
    """The slices a segment's Image Regions are drawn on: its largest, first.

    A report of one segment gets a second region, on its next largest slice (when it has
    one): PixelMed's DicomSRValidator (2022) takes the Imaging Measurements for TID 1410
    groups alone when exactly one Image Region is among them, and then reports the
    TID 1411 group "missing" its region. Both regions are valid TID 1410 groups with the
    segment's tracking identifier; OHIF merges them and draws the first.
    """
    first = segment.largest_slice
    if present != 1:
        return [first]
    areas = segment.areas.copy()
    areas[first] = 0
    second = int(np.argmax(areas))
    return [first, second] if areas[second] > 0 else [first]


def _planar(
    segment: SegmentPixels,
    z: int,
    label_map: LabelMap,
    src: Sources,
    tracking_uid: str,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    # The largest blob's outline on slice z, in SCOORD pixel space: (column, row) with
    # 0.0\\0.0 the top left corner of the top left pixel (PS3.3 C.18.6.1.2).
    points = outline(label_map.array[z] == segment.spec.label)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points,
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            src.image_at(z), referenced_frame_numbers=src.frames_at([z])
        ),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(tracking_uid, segment.spec.name),
        referenced_region=region,
        finding_type=coded(segment.spec.type),
        finding_category=coded(segment.spec.category),
        algorithm_id=algorithm_id,
        geometric_purpose=coded(codes.BOUNDED_BY),
    )


def _classified(
    finding: Finding, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    probability = Measurement(codes.PROBABILITY, finding.probability, codes.NO_UNITS)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(identity.new_uid(), finding.finding.meaning),
        algorithm_id=algorithm_id,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=coded(finding.finding),
                value=coded(codes.PRESENT if finding.present else codes.ABSENT),
            )
        ],
        measurements=[_number(probability, algorithm_id)],
    )


def _not_found(
    absent: Sequence[SegmentSpec], algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    names = [spec.type for spec in absent] or [codes.FINDING]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(identity.new_uid(), NOT_FOUND_ID),
        algorithm_id=algorithm_id,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=coded(name), value=coded(codes.ABSENT))
            for name in dict.fromkeys(names)
        ],
    )
