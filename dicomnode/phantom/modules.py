"""What every phantom series shares: file meta (PS3.10 7.1), patient and study modules
(PS3.3 C.7.1.1, C.7.2.1)."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomnode.phantom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derive_digits,
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


def add_patient_and_study(
    ds: Dataset,
    *,
    patient_name: str,
    patient_id: str,
    study_uid: str,
    study_date: str,
    study_time: str,
    study_description: str,
) -> None:
    """Synthetic identifiers, derived from the study UID so reruns give the same values."""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = derive_digits(6, "study-id", study_uid)
    ds.AccessionNumber = "PH" + derive_digits(10, "accession", study_uid)
    ds.StudyDescription = study_description
