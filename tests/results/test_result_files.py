"""Saving a result: a name of our own, complete on disk, readable as a DICOM file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from tissues import ALGORITHM, TISSUES

from dicomnode.errors import ResultError
from dicomnode.results import save, write_seg


def test_saved_files_are_named_by_us_and_complete(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    folder = tmp_path / "results" / "job-1"
    first, second = save(seg, folder), save(seg, folder)
    assert first != second
    for path in (first, second):
        assert path.parent == folder
        assert re.fullmatch(r"[0-9a-f]{32}\.dcm", path.name)
        assert str(seg.SOPInstanceUID) not in path.name
        assert path.read_bytes()[128:132] == b"DICM"
        assert pydicom.dcmread(path).SOPInstanceUID == seg.SOPInstanceUID
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, second.name])


def test_a_dataset_that_cannot_be_written_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="could not write"):
        save(Dataset(), tmp_path)  # no SOP Class/Instance UID: no file meta can be made
    assert list(tmp_path.iterdir()) == []
