"""A result that a new one replaces: what the index knows of it, and how the SR names it.

When a late instance gives a series a new version, its pipeline runs again and writes a
new SEG and SR. The new SR names the SR it replaces in its Predecessor Documents
Sequence (PS3.3 C.17.2: the study, the series and the SOP instance of each predecessor),
so a viewer or PACS that follows the chain can show the newer report and mark the older
one superseded. The SEG IOD has no such attribute; the new SR, which references the new
SEG, is the link between the two versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True, slots=True)
class PriorResult:
    """One instance of an earlier result of the same pipeline on the same series."""

    modality: str  # SEG or SR
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def predecessor_datasets(prior: Sequence[PriorResult]) -> list[Dataset] | None:
    """The SRs among ``prior`` as highdicom's ``previous_versions`` (None when none)."""
    found = []
    for item in prior:
        if item.modality != "SR":
            continue
        ds = Dataset()
        ds.StudyInstanceUID = item.study_uid
        ds.SeriesInstanceUID = item.series_uid
        ds.SOPClassUID = item.sop_class_uid
        ds.SOPInstanceUID = item.sop_instance_uid
        found.append(ds)
    return found or None
