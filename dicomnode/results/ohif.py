"""How OHIF 3.13.2 reads a TID 1500 SR, re-enacted, so tests can check what a reader sees.

Read in the built viewer (npm ``@ohif/app`` 3.13.2, ``dist/``), whose sources are OHIF's
``extensions/cornerstone-dicom-sr/src`` and ``@cornerstonejs/adapters``'
``adapters/Cornerstone3D``. OHIF is not a validator: it assumes a shape and throws where
the shape differs. This module walks an SR the same way and reports, instead of
throwing, where OHIF would throw, drop a finding, or show other numbers than the SR's:

- Loading (``getSopClassHandlerModule.ts``): the Measurement Groups of Imaging
  Measurements are merged by Tracking Unique Identifier (read unchecked, as is the
  Tracking Identifier). A merged finding with an SCOORD/SCOORD3D (not a text position)
  is a TID 1410 measurement: drawn from its *first* SCOORD, whose concept name is read
  unchecked, placed on the image its ``ReferencedSOPSequence`` names, and labelled
  ``"<NUM concept meaning>: <value, 2 decimals> <unit code value>"`` for every NUM of the
  merged groups (``_getLabelFromMeasuredValueSequence``; a value of 0 prints empty).
  A finding without one takes the non-geometric path: it gets coordinates only from
  SCOORDs inside its NUMs, and with none, ``_checkIfCanAddMeasurementsToDisplaySet``
  reads ``coords[0].ReferencedSOPSequence`` of an empty list and throws, which ends the
  loading of the SR's findings.
- Display (``OHIFCornerstoneSRMeasurementViewport.tsx``, ``DICOMSRDisplayTool.ts``): the
  SR viewport opens on the image of the first finding (with none, it throws) and draws
  each loaded finding with its labels in a text box beside it, at most five lines; its
  arrows step through the findings. These are preview annotations: the measurement
  panel does not list them. Items outside Imaging Measurements are not read at all.
- Hydration (``isRehydratable.ts``, ``hydrateStructuredReport.ts``): outside OHIF's
  "standard" tracking mode, an SR with one finding that an adapter claims is hydrated at
  once into Cornerstone tools. An adapter claims a finding by its Tracking Identifier
  (``cornerstone3DTools@^0.1.0:<Tool>``, legacy ``cornerstoneTools@^4.0.0:<Tool>``)
  or by its graphic: an Image Region POLYLINE of 4 or 5 points is a RectangleROI, a
  POINT of 1 or 2 a Probe. Hydrated tools compute and list *their own* statistics of
  the pixels under the graphic, and the adapters' search for each group's tool
  (``MeasurementReport.generateToolState``, ``RectangleROI.isValidMeasurement``) logs
  ``TypeError ... reading 'ValueType'`` for every group without an SCOORD.

- The measurement panel lists only what OHIF's ``MeasurementService`` holds. The SR
  viewport's annotations (``addSRAnnotation``) are marked ``isPreview``, and
  ``MeasurementService.addUnmappedMeasurement`` skips them ("Measurement is preview").
  Hydration is the only way in, in every ``measurementTrackingMode`` (the modes decide
  only whether OHIF asks first): it adds the adapters' tools
  (``MeasurementReport.generateToolState``, then ``addRawMeasurement`` with the tool's
  mapping), and their rows show what the tool computes from the pixels; no adapter
  copies the SR's NUMs (``PlanarFreehandROI.getMeasurementData`` takes the polyline
  only). So no encoding lists the SR's own values in the panel without naming our
  regions as Cornerstone tools, which they are not.
- A finding without an image region stops OHIF either way: with a group without an
  SCOORD, ``_checkIfCanAddMeasurementsToDisplaySet`` throws; with no group at all, the
  SR viewport's ``_getViewportReferencedDisplaySetData`` does. Both are promise
  rejections nobody catches (seen in the browser: a black viewport).

It is a model of that code, not OHIF itself; the rules above are what it checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from pydicom.dataset import Dataset

IMAGING_MEASUREMENT_REPORT: Final = "126000"
IMAGING_MEASUREMENTS: Final = "126010"
MEASUREMENT_GROUP: Final = "125007"
TRACKING_IDENTIFIER: Final = "112039"
TRACKING_UNIQUE_IDENTIFIER: Final = "112040"
TEXT_BOX_LINES: Final = 5  # DICOMSRDisplayTool._getTextBoxLinesFromLabels
_GRAPHIC: Final = ("SCOORD", "SCOORD3D")
_TEXT_POSITION: Final = ("99CS3D", "TextPosition")  # a text box position, not a region
_TOOL_TAGS: Final = ("cornerstone3DTools@^0.1.0:", "cornerstoneTools@^4.0.0:")
# (graphic concept, graphic type, point count) -> the tool whose adapter claims it
_CLAIMED: Final = {
    ("DCM:111030", "POLYLINE", 4): "RectangleROI",
    ("DCM:111030", "POLYLINE", 5): "RectangleROI",
    ("DCM:111030", "POINT", 1): "Probe",
    ("DCM:111030", "POINT", 2): "Probe",
}


@dataclass(frozen=True, slots=True)
class OhifMeasurement:
    """One finding as OHIF lists it: its groups merged by tracking UID."""

    tracking_uid: str
    tracking_id: str
    graphic_type: str | None  # None: not drawn (OHIF's non-geometric path)
    points: int  # points of the drawn graphic (0 when none)
    referenced_sop_instance_uid: str | None  # the image a drawn finding is placed on
    labels: tuple[str, ...]  # "<concept meaning>: <value> <unit>", one per NUM
    hydrated_as: str | None = None  # the Cornerstone tool an adapter turns it into

    @property
    def text_lines(self) -> tuple[str, ...]:
        """The lines of the text box OHIF draws beside the finding."""
        return self.labels[:TEXT_BOX_LINES]


@dataclass(frozen=True, slots=True)
class OhifView:
    problems: tuple[str, ...]  # where OHIF would throw, drop a finding or replace its values
    measurements: tuple[OhifMeasurement, ...] = field(default_factory=tuple)


def ohif_view(sr: Dataset) -> OhifView:
    """What OHIF 3.13.2 makes of ``sr``: its problems and the findings it would list."""
    problems: list[str] = []
    title = _code_value(sr)
    if title != IMAGING_MEASUREMENT_REPORT:
        return OhifView((f"document title is {title}: OHIF shows it as text, with no findings",))
    root = list(sr.get("ContentSequence", []))
    containers = [item for item in root if _code_value(item) == IMAGING_MEASUREMENTS]
    if not containers:
        return OhifView(
            ("no Imaging Measurements: OHIF's SR viewport reads a first finding and throws",)
        )
    merged: dict[str, list[Dataset]] = {}
    for number, group in enumerate(_groups(containers[0]), start=1):
        content = list(group.get("ContentSequence", []))
        uids = [i for i in content if _code_value(i) == TRACKING_UNIQUE_IDENTIFIER]
        if not uids:
            problems.append(f"measurement group {number} has no Tracking Unique Identifier")
            continue
        uid = str(uids[0].UID)
        if uid in merged:
            merged[uid].extend(i for i in content if _code_value(i) != TRACKING_UNIQUE_IDENTIFIER)
        else:
            merged[uid] = content
    measurements = [_measurement(uid, content, problems) for uid, content in merged.items()]
    if not measurements:
        problems.append("no finding: OHIF's SR viewport reads a first finding and throws")
    claimed = [m for m in measurements if m.hydrated_as is not None]
    if claimed:
        tools = ", ".join(f"{m.tracking_id!r} as {m.hydrated_as}" for m in claimed)
        problems.append(
            f"OHIF hydrates the SR into Cornerstone tools ({tools}); they show their own "
            "statistics, and every group without an SCOORD logs a TypeError"
        )
    return OhifView(tuple(problems), tuple(measurements))


def _measurement(uid: str, content: list[Dataset], problems: list[str]) -> OhifMeasurement:
    ids = [i for i in content if _code_value(i) == TRACKING_IDENTIFIER]
    if not ids:
        problems.append(f"finding {uid} has no Tracking Identifier (OHIF throws)")
        tracking_id = ""
    else:
        tracking_id = str(ids[0].get("TextValue", ""))
    numbers = [i for i in content if i.get("ValueType") == "NUM"]
    labels = tuple(_label(n) for n in numbers if "MeasuredValueSequence" in n)
    hydrated_as = _tool_for_identifier(tracking_id)
    graphics = [i for i in content if i.get("ValueType") in _GRAPHIC and not _is_text_position(i)]
    if not graphics:
        inner = [
            i
            for n in numbers
            for i in n.get("ContentSequence", [])
            if i.get("ValueType") in _GRAPHIC
        ]
        if not inner:
            problems.append(
                f"{tracking_id!r}: no SCOORD in the finding or its NUMs; OHIF reads "
                "coords[0] of an empty list and stops loading the SR's findings"
            )
        return OhifMeasurement(uid, tracking_id, None, 0, None, labels, hydrated_as)
    graphic = graphics[0]
    if "ConceptNameCodeSequence" not in graphic:
        problems.append(f"{tracking_id!r}: its SCOORD has no concept name (OHIF throws)")
        return OhifMeasurement(uid, tracking_id, None, 0, None, labels, hydrated_as)
    first_uidref = next(str(i.UID) for i in content if i.get("ValueType") == "UIDREF")
    if first_uidref != uid:
        problems.append(f"{tracking_id!r}: the first UIDREF is not the tracking UID")
    size = 3 if graphic.ValueType == "SCOORD3D" else 2
    points = len(graphic.GraphicData) // size
    names = graphic.ConceptNameCodeSequence[0]
    code = f"{names.CodingSchemeDesignator}:{names.CodeValue}"
    hydrated_as = hydrated_as or _CLAIMED.get((code, str(graphic.GraphicType), points))
    referenced: str | None = None
    if graphic.ValueType == "SCOORD":
        selected = list(graphic.get("ContentSequence", []))
        sops = [s for item in selected for s in item.get("ReferencedSOPSequence", [])]
        if not sops:
            problems.append(f"{tracking_id!r}: its SCOORD references no image")
        else:
            referenced = str(sops[0].ReferencedSOPInstanceUID)
    return OhifMeasurement(
        uid, tracking_id, str(graphic.GraphicType), points, referenced, labels, hydrated_as
    )


def _tool_for_identifier(tracking_id: str) -> str | None:
    """The tool whose adapter claims a Tracking Identifier (BaseAdapter3D)."""
    for tag in _TOOL_TAGS:
        if tracking_id.startswith(tag) and len(tracking_id) > len(tag):
            return tracking_id[len(tag) :].split(":")[0]
    return None


def _is_text_position(item: Dataset) -> bool:
    names = item.get("ConceptNameCodeSequence")
    return bool(names) and (names[0].CodingSchemeDesignator, names[0].CodeValue) == _TEXT_POSITION


def _groups(container: Dataset) -> Iterator[Dataset]:
    for item in container.get("ContentSequence", []):
        if _code_value(item) == MEASUREMENT_GROUP:
            yield item


def _code_value(item: Dataset) -> str | None:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else None


def _label(number: Dataset) -> str:
    """OHIF's label of a NUM: its concept's meaning, the value and the unit's code value."""
    value = number.MeasuredValueSequence[0]
    unit = value.MeasurementUnitsCodeSequence[0].CodeValue
    numeric = float(value.NumericValue)
    shown = f"{numeric:.2f}" if numeric else ""  # JavaScript: NumericValue ? ... : ''
    return f"{number.ConceptNameCodeSequence[0].CodeMeaning}: {shown} {unit}"
