"""Writing a result object to disk: a name of our choosing, fsync'ed, renamed atomically.

The file name is random (``uuid4``), never a UID or any other value from the data, so a
hostile or odd UID cannot steer where a file lands; the outbox finds results by the path
returned here. The file is complete on disk before its final name appears: written to a
hidden temporary name, fsync'ed, renamed, and the folder fsync'ed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dicomnode.errors import ResultError


def save(dataset: Dataset, folder: Path) -> Path:
    """Write ``dataset`` as a DICOM file (with preamble and file meta) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    final = folder / f"{name}.dcm"
    partial = folder / f".{name}.partial"
    try:
        with partial.open("xb") as stream:
            pydicom.dcmwrite(stream, dataset, enforce_file_format=True)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(final)
        _fsync_dir(folder)
    except (OSError, ValueError, AttributeError) as exc:  # disk errors, pydicom's refusals
        partial.unlink(missing_ok=True)
        raise ResultError(f"could not write {final.name} in {folder}: {exc}") from exc
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
