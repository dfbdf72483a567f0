"""Our group 0002 encoding is byte for byte what pydicom writes."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from dicomnode.store.filemeta import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    file_meta_bytes,
)


def pydicom_meta(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("sop_instance", "source_ae"),
    [
        ("1.2.3.4", "STORESCU"),
        ("1.2.3.45", "ODD"),
        ("1.2.840.99.1", ""),
        ("1.2", "AE16CHARACTERS_X"),
    ],
)
def test_matches_pydicom(sop_instance: str, source_ae: str) -> None:
    args = ("1.2.840.10008.5.1.4.1.1.2", sop_instance, "1.2.840.10008.1.2.4.50", source_ae)
    assert file_meta_bytes(*args) == pydicom_meta(*args)


def test_pydicom_reads_it_back_with_a_dataset_after_it() -> None:
    raw = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "9.8.7", "1.2.840.10008.1.2.1", "PACS")
    ds = pydicom.dcmread(BytesIO(raw + b"\x08\x00\x60\x00CS\x02\x00OT"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == "9.8.7"
    assert ds.file_meta.SourceApplicationEntityTitle == "PACS"
    assert ds.Modality == "OT"
