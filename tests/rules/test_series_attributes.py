"""The series view: distinct values per keyword, from the index's form, datasets or files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomnode.rules import SeriesAttributes, attributes_from_datasets, read_series_attributes


def test_from_values_takes_the_index_form() -> None:
    attributes = SeriesAttributes.from_values(
        {
            "Modality": ["CT"],
            "SeriesDescription": " STD BRAIN ",  # a bare scalar is one value
            "SliceThickness": ["5", 5.0, 1],  # numbers: "5" and 5.0 are one value
            "ImageType": [["ORIGINAL", "PRIMARY", "AXIAL"], ("ORIGINAL", "PRIMARY", "AXIAL")],
            "PixelSpacing": [[0.5, 0.5]],
            "BodyPartExamined": [None, ""],  # empty: missing
            "StationName": [],
        },
        image_count=28,
        calling_ae="CT1",
        called_ae="DICOMNODE",
        source_host="10.0.0.7",
        series_uid="1.2.3",
    )
    assert attributes.get("Modality") == ("CT",)
    assert attributes.get("SeriesDescription") == ("STD BRAIN",)
    assert attributes.get("SliceThickness") == (5.0, 1.0)
    assert attributes.differs("SliceThickness")
    assert attributes.get("ImageType") == (("ORIGINAL", "PRIMARY", "AXIAL"),)
    assert attributes.get("PixelSpacing") == ((0.5, 0.5),)
    assert "BodyPartExamined" not in attributes
    assert "StationName" not in attributes
    assert attributes.get("ImageCount") == (28.0,)
    assert attributes.get("CallingAETitle") == ("CT1",)
    assert attributes.get("CalledAETitle") == ("DICOMNODE",)
    assert attributes.get("SourceHost") == ("10.0.0.7",)
    assert attributes.series_uid == "1.2.3"
    assert sorted(attributes) == sorted(
        [
            "Modality",
            "SeriesDescription",
            "SliceThickness",
            "ImageType",
            "PixelSpacing",
            "ImageCount",
            "CallingAETitle",
            "CalledAETitle",
            "SourceHost",
        ]
    )


def test_series_attributes_are_immutable() -> None:
    attributes = SeriesAttributes.from_values({"Modality": "CT"})
    with pytest.raises(TypeError):
        attributes.values["Modality"] = ("MR",)  # type: ignore[index]  # proving it refuses


def test_a_malformed_number_stays_text() -> None:
    attributes = SeriesAttributes.from_values({"SliceThickness": ["thin", 5]})
    assert attributes.get("SliceThickness") == ("thin", 5.0)


def _dataset(**attributes: object) -> Dataset:
    dataset = Dataset()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def test_attributes_from_datasets_are_json_friendly() -> None:
    referenced = Dataset()
    referenced.ReferencedSOPInstanceUID = "1.2.3"
    first = _dataset(
        Modality="CT",
        SliceThickness="5",
        SeriesNumber="201",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        PatientName="HEAD^PHANTOM",
        ReferencedImageSequence=[referenced],
        SeriesDescription="",
    )
    second = _dataset(
        Modality="CT",
        SliceThickness="1.25",
        SeriesNumber="201",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
    )
    keywords = [
        "Modality",
        "SliceThickness",
        "SeriesNumber",
        "ImageType",
        "PatientName",
        "ReferencedImageSequence",
        "SeriesDescription",
        "BodyPartExamined",
        "ImageCount",
        "NotAKeyword",
    ]
    found = attributes_from_datasets([first, second], keywords)
    assert found == {
        "Modality": ("CT",),
        "SliceThickness": (5.0, 1.25),
        "SeriesNumber": (201,),
        "ImageType": (("ORIGINAL", "PRIMARY", "AXIAL"),),
        "PatientName": ("HEAD^PHANTOM",),
    }
    assert isinstance(found["SliceThickness"][0], float)
    assert isinstance(found["SeriesNumber"][0], int)
    json.dumps(found)
    view = SeriesAttributes.from_values(found, image_count=2)
    assert view.get("SliceThickness") == (5.0, 1.25)


def _write(path: Path, series_uid: str | None, **attributes: object) -> None:
    dataset = _dataset(**attributes)
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = generate_uid()
    if series_uid is not None:
        dataset.SeriesInstanceUID = series_uid
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)


def test_read_series_attributes_groups_files_by_series(tmp_path: Path) -> None:
    ct, mr = "1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2"
    folder = tmp_path / "study"
    (folder / "deeper").mkdir(parents=True)
    for index, thickness in enumerate(["5", "5", "2.5"]):
        _write(folder / f"ct{index}", ct, Modality="CT", SliceThickness=thickness)
    _write(folder / "deeper" / "mr0", mr, Modality="MR")
    _write(folder / "dicomdir-like", None, Modality="OT")  # no series: skipped
    (folder / "README.txt").write_text("not DICOM")
    (folder / "empty").write_bytes(b"")
    single = tmp_path / "single.dcm"
    _write(single, mr, Modality="MR")

    found = read_series_attributes(
        [folder, single], ["Modality", "SliceThickness", "ImageCount"], calling_ae="CT1"
    )
    by_uid = {attributes.series_uid: attributes for attributes in found}
    assert set(by_uid) == {ct, mr}
    assert by_uid[ct].get("Modality") == ("CT",)
    assert by_uid[ct].get("SliceThickness") == (5.0, 2.5)
    assert by_uid[ct].get("ImageCount") == (3.0,)
    assert by_uid[ct].get("CallingAETitle") == ("CT1",)
    assert by_uid[mr].get("ImageCount") == (2.0,)
    assert "SliceThickness" not in by_uid[mr]


def test_read_series_attributes_on_the_real_ct(real_ct_dir: Path) -> None:
    keywords = ["Modality", "SeriesDescription", "SliceThickness", "ImageType", "PixelSpacing"]
    (attributes,) = read_series_attributes([real_ct_dir], keywords)
    assert attributes.get("Modality") == ("CT",)
    assert attributes.get("SeriesDescription") == ("STD BRAIN 5MM",)
    assert attributes.get("SliceThickness") == (5.0,)
    assert attributes.get("ImageType") == (("ORIGINAL", "PRIMARY", "AXIAL"),)
    assert attributes.get("ImageCount") == (28.0,)  # DIRFILE has no series and is skipped
