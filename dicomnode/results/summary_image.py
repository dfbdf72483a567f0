"""The summary image: a Secondary Capture any PACS viewer shows, beside the SEG and SR.

Many viewers render neither SEG nor SR. This one RGB picture (a new series in the
source's study, series number ``definition.series_number + 2``) shows each region's
outline on the slice where it is largest, a table of the values the SR carries (the
same :class:`~dicomnode.results.content.SegmentMeasurements`, with units), or a
classifier's findings, and a footer naming the algorithm and the provenance (model and
pipeline SHA-256, rules and node version). A reference pipeline's picture carries the
banner :data:`REFERENCE_LABEL`, and its Image Comments say so too.

The text is burned into the pixels, so Burned In Annotation is YES. No patient
identifier is drawn: a viewer shows those from the header, and the picture is made only
from the series number, the modality, instance numbers and the algorithm's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import ResultError
from dicomnode.results import codes, identity
from dicomnode.results.content import (
    AlgorithmInfo,
    Finding,
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
)
from dicomnode.results.labelmap import LabelArray, LabelMap, SegmentPixels
from dicomnode.results.provenance import Provenance
from dicomnode.results.sources import SliceReference, Sources, prepare_sources
from dicomnode.results.summary_picture import (
    MAX_TILES,
    PALETTE,
    Picture,
    Table,
    Tile,
    draw,
    window,
)

REFERENCE_LABEL: Final = "REFERENCE OUTPUT - NOT FOR DIAGNOSIS"
NOTHING_FOUND: Final = "No region found"
_UNITS: Final = {"ml": "ml", "[hnsf'U]": "HU", "g/ml{SUVbw}": "g/ml", "g": "g", "1": ""}
_MIN_CHROMA: Final = 60
_MIN_DISTANCE: Final = 120  # between an outline colour and another (RGB, Euclidean)
_SHORT: Final = {
    (codes.VOLUME, None): "Volume",
    (codes.ATTENUATION_COEFFICIENT, codes.MEAN): "Mean",
    (codes.ATTENUATION_COEFFICIENT, codes.MAXIMUM): "Max",
    (codes.SUVBW, codes.MAXIMUM): "SUVbw max",
    (codes.SUVBW, codes.MEAN): "SUVbw mean",
    (codes.METABOLIC_VOLUME, None): "MTV",
    (codes.TOTAL_LESION_GLYCOLYSIS, None): "TLG",
}
# PS3.3 C.7.6.1.1.1 uses L/R, A/P, H/F for the patient's +x, +y, +z directions (LPS).
_AXES: Final = (("L", "R"), ("P", "A"), ("H", "F"))


def write_summary_image(
    sources: Sequence[Dataset] | Sources,
    algorithm: AlgorithmInfo,
    *,
    series_number: int,
    labels: LabelArray | LabelMap | None = None,
    values: npt.NDArray[Any] | None = None,
    units: str = "",
    segments: Sequence[SegmentSpec] = (),
    measurements: Sequence[SegmentMeasurements] = (),
    findings: Sequence[Finding] = (),
    refs: Sequence[SliceReference] | None = None,
    provenance: Provenance | None = None,
    reference: bool = False,
) -> Dataset:
    """The summary Secondary Capture of one run.

    A segmentation passes ``labels`` (z, y, x) with its ``segments``, the ``values`` it
    was measured on (same shape, in ``units``: "HU", "SUVbw", ...) and the SR's
    ``measurements``; a classifier passes ``findings``. ``sources`` and ``refs`` as for
    :func:`~dicomnode.results.seg.write_seg`; ``reference`` labels the output of a
    reference (not clinical) pipeline.
    """
    label_map = None if labels is None else LabelMap.of(labels, segments)
    src = prepare_sources(sources, None if label_map is None else label_map.depth, refs)
    drawn = picture(
        src, algorithm, label_map=label_map, values=values, units=units,
        measurements=measurements, findings=findings, provenance=provenance,
        reference=reference,
    )  # fmt: skip
    shown = [] if label_map is None else [src.slices[p.largest_slice] for p in _shown(label_map)]
    return _secondary_capture(src, drawn, algorithm, series_number, shown, provenance, reference)


def picture(
    src: Sources,
    algorithm: AlgorithmInfo,
    *,
    label_map: LabelMap | None = None,
    values: npt.NDArray[Any] | None = None,
    units: str = "",
    measurements: Sequence[SegmentMeasurements] = (),
    findings: Sequence[Finding] = (),
    provenance: Provenance | None = None,
    reference: bool = False,
) -> Picture:
    """The summary's pixels, the strings drawn and where each tile went."""
    if label_map is None:
        return _classification_picture(src, findings, algorithm, provenance, reference)
    if values is None or np.shape(values) != label_map.array.shape:
        raise ResultError("the summary image needs the measured values on the label grid")
    return _segmentation_picture(
        src, label_map, values, units, measurements, algorithm, provenance, reference
    )


def _segmentation_picture(
    src: Sources,
    label_map: LabelMap,
    values: npt.NDArray[Any],
    units: str,
    measurements: Sequence[SegmentMeasurements],
    algorithm: AlgorithmInfo,
    provenance: Provenance | None,
    reference: bool,
) -> Picture:
    by_label = {m.label: m.measurements for m in measurements}
    shown = _shown(label_map)
    palette = _colors(label_map)
    tiles = [_tile(src, label_map, values, units, p, palette[p.spec.label]) for p in shown]
    columns = _columns([m for p in label_map.present for m in by_label.get(p.spec.label, ())])
    rows: list[tuple[str, ...]] = []
    colors: list[tuple[int, int, int] | None] = []
    for segment in label_map.present:
        values_of = {_key(m): m for m in by_label.get(segment.spec.label, ())}
        cells = [_format(values_of[key]) if key in values_of else "-" for key, _ in columns]
        rows.append((segment.spec.name, *cells))
        colors.append(palette[segment.spec.label])
    for spec in label_map.absent:
        rows.append((spec.name, "not found", *[""] * max(len(columns) - 1, 0)))
        colors.append(None)
    if not label_map.present:
        rows.insert(0, (NOTHING_FOUND,))
        colors.insert(0, None)
    header = ("Region", *(title for _, title in columns))
    more = len(label_map.present) - len(shown)
    subtitle = f"{_series(src)}: each region outlined on the slice where it is largest" + (
        f" (the {len(shown)} largest of {len(label_map.present)})" if more > 0 else ""
    )
    return draw(
        f"{algorithm.name} {algorithm.version}: summary",
        subtitle,
        tiles,
        Table(header, tuple(rows), tuple(colors)),
        _footer(algorithm, provenance, "Values as in this algorithm's structured report (SR)"),
        banner=REFERENCE_LABEL if reference else None,
        empty=f"{NOTHING_FOUND}: no segment is present in this series",
    )


def _classification_picture(
    src: Sources,
    findings: Sequence[Finding],
    algorithm: AlgorithmInfo,
    provenance: Provenance | None,
    reference: bool,
) -> Picture:
    rows = tuple(
        (
            f.finding.meaning,
            "present" if f.present else "absent",
            f"{f.probability:.3f} (threshold {f.threshold:g})",
        )
        for f in findings
    )
    return draw(
        f"{algorithm.name} {algorithm.version}: summary",
        f"{_series(src)}: findings of a classifier over the whole series",
        (),
        Table(("Finding", "Result", "Probability"), rows),
        _footer(algorithm, provenance, "Findings as in this algorithm's structured report (SR)"),
        banner=REFERENCE_LABEL if reference else None,
    )


def _shown(label_map: LabelMap) -> list[SegmentPixels]:
    """The segments that get a tile: the largest few, in order of label."""
    largest = sorted(label_map.present, key=lambda p: -int(p.areas.sum()))[:MAX_TILES]
    return sorted(largest, key=lambda p: p.spec.label)


def _tile(
    src: Sources,
    label_map: LabelMap,
    values: npt.NDArray[Any],
    units: str,
    segment: SegmentPixels,
    color: tuple[int, int, int],
) -> Tile:
    z = segment.largest_slice
    image = src.image_at(z)
    spacing = [float(v) for v in image.get("PixelSpacing") or (1.0, 1.0)]
    number = image.get("InstanceNumber")
    where = f"image {number}" if number not in (None, "") else f"slice {z + 1}"
    if src.frame_z is not None:
        where = f"frame {src.slices[z].frame_number}"
    return Tile(
        label=segment.spec.label,
        caption=f"{segment.spec.name}, {where}",
        color=color,
        grey=window(values[z], units),
        mask=np.asarray(label_map.array[z] == segment.spec.label),
        aspect=spacing[0] / spacing[1] if spacing[1] > 0 else 1.0,
    )


def _vivid(color: tuple[int, int, int]) -> bool:
    """A colour an outline can use: one near grey (bone's off-white) vanishes on grey."""
    return max(color) - min(color) >= _MIN_CHROMA


def _apart(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) >= _MIN_DISTANCE**2


def _colors(label_map: LabelMap) -> dict[int, tuple[int, int, int]]:
    """Each present segment's colour: its own if vivid, else a palette colour unlike the
    other segments' own."""
    own = {
        p.spec.label: p.spec.color
        for p in label_map.present
        if p.spec.color is not None and _vivid(p.spec.color)
    }
    free = [c for c in PALETTE if all(_apart(c, o) for o in own.values())] or list(PALETTE)
    colors: dict[int, tuple[int, int, int]] = {}
    for segment in label_map.present:
        color = own.get(segment.spec.label)
        if color is None:
            color = free[sum(label not in own for label in colors) % len(free)]
        colors[segment.spec.label] = color
    return colors


Key = tuple[tuple[str, str], tuple[str, str] | None]


def _key(m: Measurement) -> Key:
    derivation = None if m.derivation is None else (m.derivation.value, m.derivation.scheme)
    return (m.name.value, m.name.scheme), derivation


def _columns(measurements: Sequence[Measurement]) -> list[tuple[Key, str]]:
    """One column per kind of measurement, in the order they first appear."""
    columns: dict[Key, str] = {}
    for m in measurements:
        if _key(m) not in columns:
            short = _SHORT.get((m.name, m.derivation))
            if short is None:
                derived = "" if m.derivation is None else f"{m.derivation.meaning} "
                short = f"{derived}{m.name.meaning}"
            unit = _UNITS.get(m.unit.value, m.unit.value)
            columns[_key(m)] = f"{short} ({unit})" if unit else short
    return list(columns.items())


def _format(m: Measurement) -> str:
    return f"{m.value:.2f}" if m.unit.value == "g/ml{SUVbw}" else f"{m.value:.1f}"


def _series(src: Sources) -> str:
    first = src.images[0]
    number = first.get("SeriesNumber")
    modality = src.modality
    return " ".join(
        part
        for part in (
            f"Series {number}" if number not in (None, "") else "Series",
            f"({modality})" if modality else "",
        )
        if part
    )


def _footer(algorithm: AlgorithmInfo, provenance: Provenance | None, note: str) -> list[str]:
    lines = [
        f"Algorithm: {algorithm.name} {algorithm.version}"
        + (f" ({algorithm.source})" if algorithm.source else ""),
    ]
    if provenance is None:
        lines.append("Provenance: not recorded")
    else:
        lines.append(
            f"Model SHA-256: {provenance.model_sha256[:16]}   "
            f"Pipeline SHA-256: {provenance.pipeline_sha256[:16]}"
        )
        lines.append(
            f"Rules version: {provenance.rules_version or 'none'}   "
            f"dicomnode {provenance.node_version}"
        )
        if provenance.input_envelope is not None:
            flagged = f"OUTSIDE the model's input envelope: {provenance.input_envelope}"
            lines.append(flagged if len(flagged) <= 110 else flagged[:107] + "...")
    lines.append(f"{note}. Not for measurement: the tiles are scaled.")
    return lines


def _orientation(image: Dataset) -> tuple[str, str] | None:
    """Patient Orientation of the tiles (shown as acquired: not flipped or turned)."""
    cosines = image.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    letters = []
    for vector in (cosines[:3], cosines[3:]):
        axis = int(np.argmax(np.abs(np.asarray(vector, dtype=float))))
        letters.append(_AXES[axis][0 if float(vector[axis]) > 0 else 1])
    return letters[0], letters[1]


def _secondary_capture(
    src: Sources,
    picture: Picture,
    algorithm: AlgorithmInfo,
    series_number: int,
    shown: Sequence[SliceReference],
    provenance: Provenance | None,
    reference: bool,
) -> Dataset:
    first = src.images[0]
    orientation = _orientation(first)
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=first,
            pixel_array=picture.pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=identity.new_uid(),
            series_number=series_number,
            sop_instance_uid=identity.new_uid(),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            patient_orientation=orientation or ("L", "P"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=None if provenance is None else [provenance.equipment()],
            series_description=identity.truncated(f"{algorithm.name} summary"),
            manufacturer_model_name=identity.MODEL_NAME,
            software_versions=identity.SOFTWARE_VERSION,
            device_serial_number=identity.DEVICE_SERIAL_NUMBER,
        )
    except (ValueError, AttributeError, KeyError, TypeError) as exc:  # highdicom's refusals
        raise ResultError(f"the summary image could not be built: {exc}") from exc
    if orientation is None:
        sc.PatientOrientation = []  # Type 2C, empty: the source does not say
    if "Laterality" not in sc:
        # Type 2C (paired body parts); dciodvfy cannot tell, so it is present, as the source's.
        sc.Laterality = first.get("Laterality", "")
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"  # made on a workstation (PS3.3 C.8.6.1)
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = (
        f"Summary of {algorithm.name} {algorithm.version}: region outlines on the slices "
        "where each is largest, with the values of its structured report"
    )
    if shown:
        sc.SourceImageSequence = [_referenced(ref) for ref in shown]
    if reference:
        sc.ImageComments = REFERENCE_LABEL
    return sc


def _referenced(ref: SliceReference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if ref.frame_number is not None:
        item.ReferencedFrameNumber = ref.frame_number
    return item
