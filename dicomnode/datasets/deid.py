"""De-identification by the PS3.15 Annex E Basic Application Level Confidentiality Profile.

What the profile does to each attribute comes from dicom-anonymizer's transcription of
Table E.1-1 (``dicomfields_2026c``) and, for values other than UIDs and sequences, from its
action functions. Its driver, ``anonymize_dataset``, is not used: it acts on top-level
attributes only, where the profile applies at every level of nesting, and it replaces
UIDs from a module-global random dictionary, where ours are derived from the export's key
(:mod:`dicomnode.datasets.pseudonyms`) so that references between objects, and a later
run, agree. The two options come from :mod:`dicomnode.datasets.deid_tables`.
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dicomanonymizer import simpledicomanonymizer as library
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

import dicomnode
from dicomnode.datasets.deid_scrub import TEXT_VRS, Scrubber, patient_identity, text_of
from dicomnode.datasets.deid_tables import (
    CLEAN_DESCRIPTORS,
    LONGITUDINAL_OTHER_VR,
    NOT_LONGITUDINAL,
)
from dicomnode.datasets.pseudonyms import Pseudonyms, new_key
from dicomnode.errors import DeidentificationError
from dicomnode.store.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = ["DeidOptions", "Deidentifier", "new_key"]

TABLES: Final = "dicomfields_2026c"  # dicom-anonymizer's Table E.1-1 of DICOM 2026c

# CID 7050 "De-identification Method" (PS3.16), scheme DCM.
BASIC_PROFILE: Final = ("113100", "Basic Application Confidentiality Profile")
CLEAN_DESCRIPTORS_OPTION: Final = ("113105", "Clean Descriptors Option")
RETAIN_LONGITUDINAL_OPTION: Final = (
    "113106",
    "Retain Longitudinal Temporal Information Full Dates Option",
)

_Action = Callable[[Dataset, tuple[int, int]], None]

# Table E.1-1's action codes, by the library function that carries each out.
_CODES: Final[dict[_Action, str]] = {
    library.replace: "D",
    library.empty: "Z",
    library.delete: "X",
    library.replace_UID: "U",
    library.empty_or_replace: "Z/D",
    library.delete_or_empty: "X/Z",
    library.delete_or_replace: "X/D",
    library.delete_or_empty_or_replace: "X/Z/D",
    library.delete_or_empty_or_replace_UID: "X/Z/U*",
}
_REMAPS_UID: Final = frozenset({"U", "D", "Z/D", "X/D", "X/Z/D", "X/Z/U*"})
_EMPTIES: Final = frozenset({"Z", "X/Z"})
_DATE_VRS: Final = frozenset({"DA", "DT", "TM"})
# Dummy dates and times. The library's (0001-01-01) is refused by dciodvfy, which makes a
# de-identified object invalid where the original was not.
_DUMMY_DATES: Final = {"DA": "19000101", "DT": "19000101000000", "TM": "000000"}


@dataclass(frozen=True, slots=True)
class DeidOptions:
    """The profile's options (PS3.15 E.3), and whether burned-in text may pass."""

    retain_longitudinal: bool = False  # E.3.6 Retain Longitudinal Temporal Information, Full Dates
    clean_descriptors: bool = False  # E.3.5 Clean Descriptors
    # Pixel data is never changed: an instance that says its pixels carry text is refused
    # unless someone has looked and allows it.
    allow_burned_in_annotation: bool = False


@dataclass(frozen=True, slots=True)
class _Rule:
    code: str  # the Basic Profile's action, as Table E.1-1 writes it
    action: _Action  # the library's function for it


def _profile() -> tuple[dict[int, _Rule], tuple[tuple[int, int, int, int, _Rule], ...]]:
    """Table E.1-1 by tag, and its repeating groups (50xx, 60xx) as (group, element, masks)."""
    exact: dict[int, _Rule] = {}
    masked: list[tuple[int, int, int, int, _Rule]] = []
    for tag, action in library.initialize_actions(TABLES).items():
        rule = _Rule(_CODES[action], action)
        if len(tag) == 2:
            exact[(tag[0] << 16) | tag[1]] = rule
        else:
            masked.append((tag[0], tag[1], tag[2], tag[3], rule))
    return exact, tuple(masked)


_EXACT, _MASKED = _profile()


def _rule_for(tag: BaseTag) -> _Rule | None:
    rule = _EXACT.get(int(tag))
    if rule is not None:
        return rule
    for group, element, group_mask, element_mask, masked_rule in _MASKED:
        if tag.group & group_mask == group & group_mask and (
            tag.element & element_mask == element & element_mask
        ):
            return masked_rule
    return None


class Deidentifier:
    """De-identifies instances for one export: one key, so one set of pseudonyms."""

    def __init__(self, options: DeidOptions, key: bytes) -> None:
        self._options = options
        self._pseudonyms = Pseudonyms(key)
        self._method = _method_values(options)

    def patient_pseudonym(self, dataset: Dataset) -> str:
        """What :meth:`apply` puts in PatientID and PatientName for this patient."""
        return self._pseudonyms.patient(patient_identity(dataset))

    def remap_uid(self, uid: str) -> str:
        """The UID that replaces ``uid`` (well-known UIDs are their own)."""
        return self._pseudonyms.uid(uid)

    def mapping(self) -> list[dict[str, str]]:
        """What this run replaced: ``kind`` (patient, uid), ``original``, ``pseudonym``."""
        return self._pseudonyms.mapping()

    def write_mapping(self, path: Path, earlier: Iterable[Mapping[str, str]] = ()) -> None:
        """The mapping as CSV (mode 0600, replaced atomically): it re-identifies the export.
        ``earlier``: an earlier run's rows, kept (a resumed export)."""
        self._pseudonyms.write_mapping(path, earlier)

    def apply(self, dataset: Dataset) -> Dataset:
        """A de-identified copy of ``dataset``; the pixel data is copied unchanged."""
        burned_in = text_of(dataset, "BurnedInAnnotation").upper() == "YES"
        if burned_in and not self._options.allow_burned_in_annotation:
            raise DeidentificationError(
                "the instance has BurnedInAnnotation=YES: its pixels may show identifying "
                "text, which de-identification does not remove; allow burned-in annotation "
                "only after checking the images"
            )
        pseudonym = self.patient_pseudonym(dataset)
        scrubber = Scrubber(dataset) if self._options.clean_descriptors else None
        result = copy.deepcopy(dataset)
        self._clean(result, scrubber)
        result.PatientName = pseudonym
        result.PatientID = pseudonym
        self._mark(result)
        meta = getattr(dataset, "file_meta", None)
        if meta is not None:
            result.file_meta = _file_meta(meta, result)
        return result

    def _clean(self, dataset: Dataset, scrubber: Scrubber | None) -> None:
        """The profile on one level of ``dataset``, and on the sequences it keeps."""
        for element in list(dataset):
            tag = element.tag
            if tag.is_private:
                del dataset[tag]  # the Basic Profile removes private attributes
                continue
            rule = _rule_for(tag)
            if rule is None:  # K: kept, and cleaned inside if a sequence
                if element.VR == "SQ":
                    for item in element.value:
                        self._clean(item, scrubber)
            elif self._retained(tag, element.VR):
                pass
            elif scrubber is not None and self._cleanable(tag, element.VR):
                if element.VR == "SQ":
                    for item in element.value:
                        self._clean(item, scrubber)
                        scrubber.clean_all(item)
                else:
                    scrubber.clean_element(element)
            else:
                self._act(dataset, element, rule)

    def _act(self, dataset: Dataset, element: DataElement, rule: _Rule) -> None:
        tag = element.tag
        if element.VR == "SQ":
            if rule.code in ("U", "X/Z/U*"):  # keep, with the UIDs inside replaced
                for item in element.value:
                    self._clean(item, None)
            elif rule.code == "X":
                del dataset[tag]
            elif rule.code in _EMPTIES:
                element.value = Sequence()
            else:  # D: the items stay, every value in them a dummy
                for item in element.value:
                    self._dummy(item)
        elif element.VR == "UI" and rule.code in _REMAPS_UID:
            self._remap(element)
        elif element.VR in _DATE_VRS:
            if rule.code == "X":  # removed, where the library writes a dummy
                del dataset[tag]
            elif rule.code in _EMPTIES:
                element.value = ""
            else:
                element.value = _DUMMY_DATES[element.VR]
        else:
            try:
                rule.action(dataset, (tag.group, tag.element))
            except NotImplementedError:  # the library has no dummy for this VR
                del dataset[tag]

    def _dummy(self, item: Dataset) -> None:
        """Every value in ``item`` replaced as the library's ``replace`` does, UIDs ours."""
        for element in list(item):
            if element.tag.is_private:
                del item[element.tag]
            elif self._retained(element.tag, element.VR):
                pass
            elif element.VR == "SQ":
                for nested in element.value:
                    self._dummy(nested)
            elif element.VR == "UI":
                self._remap(element)
            elif element.VR in _DATE_VRS:
                element.value = _DUMMY_DATES[element.VR]
            else:
                try:
                    library.replace_element(element)
                except NotImplementedError:
                    del item[element.tag]

    def _remap(self, element: DataElement) -> None:
        if not element.value:
            return
        if isinstance(element.value, MultiValue):
            element.value = [self._pseudonyms.uid(str(v)) for v in element.value]
        else:
            element.value = self._pseudonyms.uid(str(element.value))

    def _retained(self, tag: BaseTag, vr: str) -> bool:
        if not self._options.retain_longitudinal:
            return False
        pair = (tag.group, tag.element)
        return pair in LONGITUDINAL_OTHER_VR or (vr in _DATE_VRS and pair not in NOT_LONGITUDINAL)

    @staticmethod
    def _cleanable(tag: BaseTag, vr: str) -> bool:
        return (tag.group, tag.element) in CLEAN_DESCRIPTORS and (vr in TEXT_VRS or vr == "SQ")

    def _mark(self, dataset: Dataset) -> None:
        """PS3.15 E.1.1: say that, and how, the instance was de-identified."""
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = list(self._method)
        dataset.DeidentificationMethodCodeSequence = _method_codes(self._options)
        dataset.LongitudinalTemporalInformationModified = (
            "UNMODIFIED" if self._options.retain_longitudinal else "REMOVED"
        )


def _method_values(options: DeidOptions) -> tuple[str, ...]:
    """De-identification Method (LO, each value at most 64 characters)."""
    values = ["DICOM PS3.15 E.1 " + BASIC_PROFILE[1]]
    values += [meaning for _, meaning in _options_codes(options)]
    anonymizer = importlib.metadata.version("dicom_anonymizer")
    values.append(f"dicomnode {dicomnode.__version__}, dicom-anonymizer {anonymizer} {TABLES}")
    return tuple(value[:64] for value in values)


def _options_codes(options: DeidOptions) -> Iterable[tuple[str, str]]:
    if options.clean_descriptors:
        yield CLEAN_DESCRIPTORS_OPTION
    if options.retain_longitudinal:
        yield RETAIN_LONGITUDINAL_OPTION


def _method_codes(options: DeidOptions) -> Sequence:
    items = []
    for value, meaning in (BASIC_PROFILE, *_options_codes(options)):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return Sequence(items)


def _file_meta(original: FileMetaDataset, dataset: Dataset) -> FileMetaDataset:
    """A new file meta: the instance's new UID, no source AE title, our implementation."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = dataset.get(
        "SOPClassUID", original.get("MediaStorageSOPClassUID")
    )
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    if "TransferSyntaxUID" in original:
        meta.TransferSyntaxUID = original.TransferSyntaxUID
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
