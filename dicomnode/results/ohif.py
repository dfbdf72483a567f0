"""How OHIF 3 reads a TID 1500 SR, re-enacted, so tests can check an SR will not break it.

OHIF's loader (``extensions/cornerstone-dicom-sr/src/getSopClassHandlerModule``) is not a
validator: it assumes a shape and throws where the shape differs, which blanks the
viewer's SR panel. This module walks an SR the same way and reports, instead of
throwing, every place where OHIF would throw or silently drop a finding:

- the document title must be Imaging Measurement Report (126000, DCM), or OHIF refuses it;
- the Image Library and the Imaging Measurements containers are dereferenced unchecked
  in older 3.x releases;
- every Measurement Group needs a Tracking Unique Identifier (UIDREF) and a Tracking
  Identifier (TEXT): both are read with no check;
- groups are merged by Tracking Unique Identifier; a merged finding with a top-level
  SCOORD/SCOORD3D is drawn from the first one, which needs a referenced image (SCOORD) to
  be placed; the first UIDREF of the merged content is taken as the tracking UID;
- a merged finding without one takes the "non-geometric" path, which destructures the
  ``ContentSequence`` of each NUM: a NUM without one throws.

It is a model of that code, not OHIF itself; the rules above are what it checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from pydicom.dataset import Dataset

IMAGING_MEASUREMENT_REPORT: Final = "126000"
IMAGE_LIBRARY: Final = "111028"
IMAGING_MEASUREMENTS: Final = "126010"
MEASUREMENT_GROUP: Final = "125007"
TRACKING_IDENTIFIER: Final = "112039"
TRACKING_UNIQUE_IDENTIFIER: Final = "112040"
_GRAPHIC: Final = ("SCOORD", "SCOORD3D")


@dataclass(frozen=True, slots=True)
class OhifMeasurement:
    """One finding as OHIF lists it: its groups merged by tracking UID."""

    tracking_uid: str
    tracking_id: str
    graphic_type: str | None  # None: not drawn (OHIF's non-geometric path)
    referenced_sop_instance_uid: str | None  # the image a drawn finding is placed on
    labels: tuple[str, ...]  # "<concept meaning>: <value> <unit>", one per NUM


@dataclass(frozen=True, slots=True)
class OhifView:
    problems: tuple[str, ...]  # where OHIF would throw or drop the finding
    measurements: tuple[OhifMeasurement, ...] = field(default_factory=tuple)


def ohif_view(sr: Dataset) -> OhifView:
    """What OHIF 3 makes of ``sr``: its problems and the findings it would list."""
    problems: list[str] = []
    title = _code_value(sr)
    if title != IMAGING_MEASUREMENT_REPORT:
        return OhifView((f"document title is {title}, not Imaging Measurement Report",))
    root = list(sr.get("ContentSequence", []))
    if not any(_code_value(item) == IMAGE_LIBRARY for item in root):
        problems.append("no Image Library container")
    containers = [item for item in root if _code_value(item) == IMAGING_MEASUREMENTS]
    if not containers:
        return OhifView((*problems, "no Imaging Measurements container"))
    merged: dict[str, list[Dataset]] = {}
    for number, group in enumerate(_groups(containers[0]), start=1):
        content = list(group.get("ContentSequence", []))
        uids = [i for i in content if _code_value(i) == TRACKING_UNIQUE_IDENTIFIER]
        ids = [i for i in content if _code_value(i) == TRACKING_IDENTIFIER]
        if not uids or not ids:
            problems.append(f"measurement group {number} lacks a tracking identifier or UID")
            continue
        uid = str(uids[0].UID)
        if uid in merged:
            merged[uid].extend(i for i in content if _code_value(i) != TRACKING_UNIQUE_IDENTIFIER)
        else:
            merged[uid] = content
    measurements = [_measurement(uid, content, problems) for uid, content in merged.items()]
    return OhifView(tuple(problems), tuple(measurements))


def _measurement(uid: str, content: list[Dataset], problems: list[str]) -> OhifMeasurement:
    tracking_id = next(
        str(i.get("TextValue", "")) for i in content if _code_value(i) == TRACKING_IDENTIFIER
    )
    numbers = [i for i in content if i.get("ValueType") == "NUM"]
    labels = tuple(_label(n) for n in numbers if "MeasuredValueSequence" in n)
    graphics = [i for i in content if i.get("ValueType") in _GRAPHIC]
    if not graphics:
        for n in numbers:
            if "ContentSequence" not in n:
                problems.append(
                    f"{tracking_id!r}: NUM {_meaning(n)!r} has no ContentSequence and the "
                    "finding no SCOORD (OHIF throws on its non-geometric path)"
                )
        return OhifMeasurement(uid, tracking_id, None, None, labels)
    first_uidref = next(str(i.UID) for i in content if i.get("ValueType") == "UIDREF")
    if first_uidref != uid:
        problems.append(f"{tracking_id!r}: the first UIDREF is not the tracking UID")
    graphic = graphics[0]
    referenced: str | None = None
    if graphic.ValueType == "SCOORD":
        selected = list(graphic.get("ContentSequence", []))
        sops = [s for item in selected for s in item.get("ReferencedSOPSequence", [])]
        if not sops:
            problems.append(f"{tracking_id!r}: its SCOORD references no image")
        else:
            referenced = str(sops[0].ReferencedSOPInstanceUID)
    return OhifMeasurement(uid, tracking_id, str(graphic.GraphicType), referenced, labels)


def _groups(container: Dataset) -> Iterator[Dataset]:
    for item in container.get("ContentSequence", []):
        if _code_value(item) == MEASUREMENT_GROUP:
            yield item


def _code_value(item: Dataset) -> str | None:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else None


def _meaning(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


def _label(number: Dataset) -> str:
    value = number.MeasuredValueSequence[0]
    unit = value.MeasurementUnitsCodeSequence[0].CodeValue
    return f"{_meaning(number)}: {float(value.NumericValue):.2f} {unit}"
