"""IHE IOCM rejection notes, read from a Key Object Selection into plain values.

A rejection note is a Key Object Selection Document (PS3.3 A.35.4) whose document title,
its Concept Name Code Sequence, is one of the IOCM rejection titles of PS3.16 CID 7011
(IHE RAD TF-3 4.66, "Rejection Note Stored"). It withdraws the instances listed in its
Current Requested Procedure Evidence Sequence (PS3.3 C.17.2.1). Every other Key Object
Selection (e.g. 113000 "Of Interest") is an ordinary series to the rules.

Parsing stops here: the rest of the node sees a frozen ``RejectionNote``, never the
dataset, and a hostile note (missing sequences, malformed UIDs, endless references) is
read to what is well formed in it, within a bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pydicom

KEY_OBJECT_SELECTION: Final = "1.2.840.10008.5.1.4.1.1.88.59"

# PS3.16 CID 7011 "Rejected for Quality Reasons" titles, scheme DCM, as IHE IOCM uses them.
REJECTION_TITLES: Final = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}

# A note naming more instances than this is read up to it (and says so): a study of
# many thousand images fits, a hostile note cannot make routing hold millions of UIDs.
MAX_REFERENCES: Final = 100_000

# PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True, slots=True)
class Reference:
    """One instance a note rejects."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class RejectionNote:
    """What a rejection note says: why, and which instances."""

    sop_instance_uid: str
    code: str  # one of REJECTION_TITLES
    meaning: str  # the standard's meaning for the code (not the sender's spelling)
    references: tuple[Reference, ...]
    malformed: int = 0  # reference items left out: a missing or invalid UID
    truncated: bool = False  # more than MAX_REFERENCES were listed

    @property
    def reason(self) -> str:
        """``113001 Rejected for Quality Reasons``: what jobs and logs show."""
        return f"{self.code} {self.meaning}"


def rejection_title(dataset: pydicom.Dataset) -> str | None:
    """The IOCM rejection code a Key Object Selection carries as its title, or None."""
    if str(dataset.get("SOPClassUID", "")) != KEY_OBJECT_SELECTION:
        return None
    titles = dataset.get("ConceptNameCodeSequence")
    if not titles:
        return None
    title = titles[0]
    code = str(title.get("CodeValue", "")).strip()
    scheme = str(title.get("CodingSchemeDesignator", "")).strip()
    return code if scheme == "DCM" and code in REJECTION_TITLES else None


def read_note(dataset: pydicom.Dataset) -> RejectionNote | None:
    """The rejection note ``dataset`` is, or None when it is not one."""
    code = rejection_title(dataset)
    if code is None:
        return None
    references: dict[str, Reference] = {}
    malformed, truncated = 0, False
    for study in _items(dataset, "CurrentRequestedProcedureEvidenceSequence"):
        study_uid = _uid(study, "StudyInstanceUID")
        for series in _items(study, "ReferencedSeriesSequence"):
            series_uid = _uid(series, "SeriesInstanceUID")
            for item in _items(series, "ReferencedSOPSequence"):
                sop_uid = _uid(item, "ReferencedSOPInstanceUID")
                if study_uid is None or series_uid is None or sop_uid is None:
                    malformed += 1
                elif len(references) >= MAX_REFERENCES:
                    truncated = True
                else:
                    references.setdefault(sop_uid, Reference(study_uid, series_uid, sop_uid))
    return RejectionNote(
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        code=code,
        meaning=REJECTION_TITLES[code],
        references=tuple(references.values()),
        malformed=malformed,
        truncated=truncated,
    )


def _items(dataset: pydicom.Dataset, keyword: str) -> list[pydicom.Dataset]:
    value = dataset.get(keyword)
    return [item for item in value if isinstance(item, pydicom.Dataset)] if value else []


def _uid(dataset: pydicom.Dataset, keyword: str) -> str | None:
    value = str(dataset.get(keyword, "") or "").strip().rstrip("\x00")
    return value if len(value) <= 64 and _UID.match(value) else None
