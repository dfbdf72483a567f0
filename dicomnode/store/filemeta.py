"""The DICOM File Meta Information (PS3.10 7.1) put in front of each received dataset."""

from __future__ import annotations

import warnings
from io import BytesIO

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

import dicomnode

# Under pydicom's registered root (1.2.826.0.1.3680043.8.498), as pydicom's own is.
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.7.4.1")
IMPLEMENTATION_VERSION_NAME = f"DICOMNODE_{dicomnode.__version__}"[:16]


def file_meta_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and group 0002 for a dataset stored exactly as received."""
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    with warnings.catch_warnings():
        # A non-conformant but usable UID was already reported by the header check.
        warnings.simplefilter("ignore")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(sop_class_uid)
        meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
        meta.TransferSyntaxUID = UID(transfer_syntax_uid)
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        if source_ae.strip():
            meta.SourceApplicationEntityTitle = source_ae.strip()
        # Any binary file object works; pydicom's annotation names its own DicomIO.
        write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()
