"""The patient and study modules every phantom series shares (PS3.3 C.7.1.1, C.7.2.1)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomnode.phantom.uids import derive_digits


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
