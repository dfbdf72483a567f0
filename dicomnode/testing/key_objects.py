"""Key Object Selection documents for tests: IOCM rejection notes and ordinary ones.

Built the way a modality or PACS sends them (PS3.3 A.35.4, IHE RAD TF-3 4.66): the title
in the Concept Name Code Sequence, the referenced instances in the Current Requested
Procedure Evidence Sequence and, as IMAGE items, in the content tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
REJECTED_FOR_QUALITY = ("113001", "DCM", "Rejected for Quality Reasons")
REJECTED_FOR_SAFETY = ("113037", "DCM", "Rejected for Patient Safety Reasons")
OF_INTEREST = ("113000", "DCM", "Of Interest")


@dataclass(frozen=True, slots=True)
class Referenced:
    """One instance a key object names."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def references_of(paths: Sequence[Path]) -> list[Referenced]:
    """What a key object names to select these files' instances."""
    found = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found.append(
            Referenced(
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
            )
        )
    return found


def write_key_object(
    path: Path,
    references: Sequence[Referenced],
    title: tuple[str, str, str] = REJECTED_FOR_QUALITY,
    *,
    patient_id: str = "PHANTOM",
    series_uid: str | None = None,
) -> Path:
    """A Key Object Selection titled ``title`` (value, scheme, meaning) naming ``references``."""
    study_uid = references[0].study_uid if references else generate_uid()
    ds = pydicom.Dataset()
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "KO"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.PatientID = patient_id
    ds.PatientName = "Phantom^Test"
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [_code(*title)]
    evidence: dict[str, dict[str, list[Referenced]]] = {}
    for ref in references:
        evidence.setdefault(ref.study_uid, {}).setdefault(ref.series_uid, []).append(ref)
    ds.CurrentRequestedProcedureEvidenceSequence = [
        _item(
            StudyInstanceUID=study,
            ReferencedSeriesSequence=[
                _item(
                    SeriesInstanceUID=series,
                    ReferencedSOPSequence=[
                        _item(
                            ReferencedSOPClassUID=ref.sop_class_uid,
                            ReferencedSOPInstanceUID=ref.sop_instance_uid,
                        )
                        for ref in refs
                    ],
                )
                for series, refs in by_series.items()
            ],
        )
        for study, by_series in evidence.items()
    ]
    ds.ContentSequence = [
        _item(
            RelationshipType="CONTAINS",
            ValueType="IMAGE",
            ReferencedSOPSequence=[
                _item(
                    ReferencedSOPClassUID=ref.sop_class_uid,
                    ReferencedSOPInstanceUID=ref.sop_instance_uid,
                )
            ],
        )
        for ref in references
    ]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _code(value: str, scheme: str, meaning: str) -> pydicom.Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _item(**elements: object) -> pydicom.Dataset:
    item = pydicom.Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item
