"""The "AI not run" report: a small SR telling the radiologist an algorithm did not run.

A series a rule sent to a pipeline that then refused it, or failed on it for good, would
otherwise leave nothing in the study, and an absent result reads like a forgotten one.
This Comprehensive SR (a new series in the source's study) says which algorithm, on
which series, that it did not run and why, in plain words, and that no results were
made. Its document title and content are plain coded TEXT items, so any SR viewer shows
them as they are; codes with no standard equivalent use the private scheme
``99DICOMNODE`` (PS3.16 8.2: private designators start with ``99``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from dicomnode.errors import ResultError
from dicomnode.results import identity
from dicomnode.results.content import AlgorithmInfo
from dicomnode.results.provenance import Provenance

SCHEME: Final = "99DICOMNODE"
TITLE: Final = hd.sr.CodedConcept("ai-not-run", SCHEME, "AI not run")
_SERIES: Final = hd.sr.CodedConcept("series", SCHEME, "Series")
_OUTCOME: Final = hd.sr.CodedConcept("outcome", SCHEME, "Outcome")
_REASON: Final = hd.sr.CodedConcept("reason", SCHEME, "Reason")
_DETAIL: Final = hd.sr.CodedConcept("technical-detail", SCHEME, "Technical detail")
OUTCOME_TEXT: Final = "Not run: no results were made for this series"

# The technical reasons a reader can act on, in a reader's words (first match wins).
_PLAIN: Final = (
    (
        "several orientations",
        "the series has several orientations (a localizer or a second stack); "
        "the algorithm needs one stack of parallel slices",
    ),
    (
        "cannot be placed in space",
        "the images lack the position or orientation information needed to place them in space",
    ),
    ("different sizes", "the images of the series have different sizes"),
    ("different pixel spacings", "the images of the series have different pixel spacings"),
    ("duplicated slice positions", "two or more images lie at the same position"),
    ("lie on no one line", "the slices do not form one straight stack"),
    (
        "irregular slice spacing",
        "the slices are unevenly spaced and this algorithm needs them regular",
    ),
    (
        "not a grey-scale image",
        "the series holds colour images; the algorithm needs grey-scale images",
    ),
    ("too large", "the series is larger than this node is set to process"),
    ("do not share one", "the images belong to more than one series or frame of reference"),
    ("is an image", "the series holds no images the algorithm can read"),
    ("cannot decode", "the images' pixel data could not be decoded"),
    ("cannot read", "an image of the series could not be read"),
    ("timed out", "the algorithm took longer than it is allowed"),
    ("exceeded", "the algorithm took longer than it is allowed"),
    ("StorageError", "the node could not store its results (a temporary fault; retries ran out)"),
    ("OSError", "the node could not read or write its files (retries ran out)"),
)
_FALLBACK: Final = "the algorithm failed on this series"


# dicomnode.pipeline.envelope's refusals start so; their reasons are already plain.
ENVELOPE_MARKER: Final = "outside the input envelope of model"


def plain_reason(error: str) -> str:
    """The job's technical error as a sentence a reader understands."""
    if error.startswith(ENVELOPE_MARKER):
        _, _, reasons = error.partition(": ")
        return "the series lies outside the inputs this algorithm was validated on" + (
            f" ({reasons})" if reasons else ""
        )
    for marker, words in _PLAIN:
        if marker in error:
            return words
    return _FALLBACK


def write_not_run_sr(
    sources: Sequence[Dataset],
    algorithm: AlgorithmInfo,
    error: str,
    *,
    series_number: int,
    provenance: Provenance | None = None,
) -> Dataset:
    """The "AI not run" SR for a series (``sources``: its instances' headers).

    ``error`` is the job's technical reason: the report gives it in plain words and, as
    "Technical detail", as it is (for whoever looks into it).
    """
    usable = [ds for ds in sources if _usable(ds)]
    if not usable:
        raise ResultError("no instance of the series can be referenced")
    first = usable[0]
    number = first.get("SeriesNumber")
    description = str(first.get("SeriesDescription") or "").strip()
    series = " ".join(
        part
        for part in (
            f"Series {number}" if number not in (None, "") else "Series",
            f'"{description}"' if description else "",
            f"({first.Modality})" if first.get("Modality") else "",
        )
        if part
    )
    items: list[hd.sr.ContentItem] = [
        _text(dicom_codes.DCM.AlgorithmName, algorithm.name),
        _text(dicom_codes.DCM.AlgorithmVersion, algorithm.version),
    ]
    if algorithm.source:
        items.append(_text(dicom_codes.DCM.AlgorithmManufacturer, algorithm.source))
    items += [
        _text(_SERIES, series),
        hd.sr.UIDRefContentItem(
            name=dicom_codes.DCM.SeriesInstanceUID,
            value=str(first.SeriesInstanceUID),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        _text(_OUTCOME, OUTCOME_TEXT),
        _text(_REASON, plain_reason(error)),
        _text(_DETAIL, _clean(error)),
    ]
    if provenance is not None:
        items += [_text(dicom_codes.DCM.AlgorithmParameters, p) for p in provenance.sr_parameters()]
    root = hd.sr.ContainerContentItem(name=TITLE, template_id=None)
    root.ContentSequence = hd.sr.ContentSequence(items)
    try:
        return hd.sr.ComprehensiveSR(
            evidence=usable,
            content=root,
            series_instance_uid=identity.new_uid(),
            series_number=series_number,
            sop_instance_uid=identity.new_uid(),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=identity.truncated(f"AI not run: {algorithm.name}"),
            manufacturer_model_name=identity.MODEL_NAME,
            software_versions=identity.SOFTWARE_VERSION,
            device_serial_number=identity.DEVICE_SERIAL_NUMBER,
            contributing_equipment=None if provenance is None else [provenance.equipment()],
        )
    except (ValueError, AttributeError, KeyError, TypeError) as exc:  # highdicom's refusals
        raise ResultError(f"the not-run SR could not be built: {exc}") from exc


def _usable(ds: Dataset) -> bool:
    keys = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
    return all(ds.get(k) for k in keys)


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _clean(text: str) -> str:
    """The error as UT text: no control characters but tab, line feed and carriage return."""
    return re.sub(r"[\x00-\x08\x0b-\x1f]", " ", text)[:10000] or "-"
