"""The patient's identifiers as found in the dataset itself, and free text cleaned of them.

Used by the Clean Descriptors option (PS3.15 E.3.5) and to choose what a patient's
pseudonym is derived from.
"""

from __future__ import annotations

import re
from typing import Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

CLEANED: Final = "***"  # what an identifier in a cleaned descriptor becomes
TEXT_VRS: Final = frozenset({"SH", "LO", "ST", "LT", "UC", "UT"})
_MAX_LENGTH: Final = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}


def text_of(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def patient_identity(dataset: Dataset) -> str:
    """What identifies the patient: the Patient ID, else name and birth date, else the study.

    The last resort keeps two unidentified patients apart rather than making them one.
    """
    patient_id = text_of(dataset, "PatientID")
    if patient_id:
        return patient_id
    name, birth = text_of(dataset, "PatientName"), text_of(dataset, "PatientBirthDate")
    if name or birth:
        return f"PatientName={name};PatientBirthDate={birth}"
    return f"StudyInstanceUID={text_of(dataset, 'StudyInstanceUID')}"


class Scrubber:
    """Finds the patient's identifiers in free text (the Clean Descriptors option)."""

    def __init__(self, dataset: Dataset) -> None:
        words: set[str] = set()  # matched as whole words: a name part inside a word is not one
        for keyword in ("PatientName", "OtherPatientNames", "PatientBirthName"):
            for name in _values(dataset.get(keyword)):
                words.update(w for w in re.split(r"[\^=\s,]+", name) if len(w) >= 2)
        identifiers = {text_of(dataset, "AccessionNumber"), text_of(dataset, "PatientID")}
        identifiers.update(_values(dataset.get("OtherPatientIDs")))
        for item in dataset.get("OtherPatientIDsSequence") or ():
            identifiers.add(text_of(item, "PatientID"))
        anywhere: set[str] = set()  # an ID of four characters or more, even inside a word
        for identifier in filter(None, identifiers):
            (anywhere if len(identifier) >= 4 else words).add(identifier)
        anywhere.update(_date_spellings(text_of(dataset, "PatientBirthDate")))
        alternatives = [rf"(?<![^\W_]){re.escape(w)}(?![^\W_])" for w in words]
        alternatives += [re.escape(a) for a in anywhere]
        alternatives.sort(key=len, reverse=True)  # the longest spelling first
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def clean(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(CLEANED, text)

    def clean_element(self, element: DataElement) -> None:
        if element.VR not in TEXT_VRS or element.value is None:
            return
        limit = _MAX_LENGTH.get(element.VR)
        cleaned = [self.clean(str(v))[:limit] for v in _values(element.value)]
        element.value = cleaned if isinstance(element.value, MultiValue) else cleaned[0]

    def clean_all(self, dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    self.clean_all(item)
            else:
                self.clean_element(element)


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _date_spellings(date: str) -> set[str]:
    """A DA value as people write it: 19700131, 1970-01-31, 31.01.1970, 01/31/1970, ..."""
    if not re.fullmatch(r"\d{8}", date):
        return set()
    y, m, d = date[:4], date[4:6], date[6:]
    spellings = {f"{y}{sep}{m}{sep}{d}" for sep in ("", "-", ".", "/")}
    spellings.update(f"{d}{sep}{m}{sep}{y}" for sep in (".", "/", "-"))
    spellings.add(f"{m}/{d}/{y}")
    return spellings
