"""What every phantom series shares: file meta (PS3.10 7.1), patient and study modules
(PS3.3 C.7.1.1, C.7.2.1, C.7.2.2)."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from dicomnode.phantom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derive_digits,
    derive_uid,
)


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    """The file meta of one phantom instance: Explicit VR Little Endian, our implementation."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


@dataclass(frozen=True, slots=True)
class PatientStudy:
    """Every patient- and study-level value a series writes, in one place.

    The derived study UID hashes all of them, so two series share a derived study only when
    their patient and study entities agree: dcentvfy-clean by construction, and a CT and a
    PET phantom of two patients never become one study that viewers show as "multiple
    patients".
    """

    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
    study_description: str
    patient_weight_kg: DSfloat | None = None  # Patient Study module (PET needs it for SUV)
    patient_size_m: DSfloat | None = None

    def derive_study_uid(self, seed: int) -> UID:
        return derive_uid("study", str(seed), *(str(value) for value in astuple(self)))


def add_patient_and_study(ds: Dataset, study: PatientStudy, study_uid: str) -> None:
    """Synthetic identifiers, derived from the study UID so reruns give the same values."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = derive_digits(6, "study-id", study_uid)
    ds.AccessionNumber = "PH" + derive_digits(10, "accession", study_uid)
    ds.StudyDescription = study.study_description
    if study.patient_size_m is not None:
        ds.PatientSize = study.patient_size_m
    if study.patient_weight_kg is not None:
        ds.PatientWeight = study.patient_weight_kg
