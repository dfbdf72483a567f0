"""NIfTI export: voxel (i, j, k) lies where the DICOM file of slice k puts that pixel.

The patient coordinate is computed here from each file's own Image Plane attributes with
pydicom, never from :mod:`dicomnode.volume`: ImagePositionPatient + i * column spacing *
row direction + j * row spacing * column direction (PS3.3 C.7.6.2.1.1), then LPS to RAS.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from dicomnode.datasets.dynamic import load_dynamic
from dicomnode.datasets.nifti import (
    frame_timing,
    save_nifti,
    save_sidecar,
    sidecar_path,
    to_nifti,
    to_nifti_4d,
)
from dicomnode.errors import ExportError
from dicomnode.phantom import PETPhantomSpec, write_pet_phantom
from dicomnode.pipeline.loading import LoadedSeries, load_series
from dicomnode.volume import Geometry, Volume

PET = PETPhantomSpec(slices=10, rows=40, columns=48, pixel_spacing_mm=8.0)
DYNAMIC = PETPhantomSpec(slices=6, rows=24, columns=32, pixel_spacing_mm=12.0, time_frames=3)


def _patient_ras(path: Path, i: int, j: int) -> npt.NDArray[np.float64]:
    """Pixel (column i, row j) of the file, in RAS mm, from its own header."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    row_direction, column_direction = np.array(orientation[:3]), np.array(orientation[3:])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    lps = position + i * column_spacing * row_direction + j * row_spacing * column_direction
    return np.array([-lps[0], -lps[1], lps[2]])


def _check_exported(series: LoadedSeries, files: list[Path], out: Path) -> nib.Nifti1Image:
    volume = series.volume
    path = out / "scan.nii.gz"
    save_nifti(to_nifti(volume), path)
    image = nib.load(path)
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}
    nz, ny, nx = volume.shape
    assert image.shape == (nx, ny, nz)
    assert image.header.get_sform(coded=True)[1] == 1
    assert image.header.get_xyzt_units() == ("mm", "sec")
    voxels = [(0, 0, 0), (nx - 1, 0, 0), (0, ny - 1, 0), (0, 0, nz - 1)]
    voxels += [(nx - 1, ny - 1, nz - 1), (nx // 2, ny // 3, nz // 2)]
    for i, j, k in voxels:
        expected = _patient_ras(by_uid[volume.refs[k].sop_instance_uid], i, j)
        found = (image.affine @ np.array([i, j, k, 1.0]))[:3]
        assert np.allclose(found, expected, rtol=0, atol=1e-3), (i, j, k, found, expected)
    data = np.asarray(image.dataobj)
    assert np.array_equal(data, volume.array.transpose(2, 1, 0))
    return image


def test_real_ct_affine_and_voxels(real_ct_images: list[Path], tmp_path: Path) -> None:
    series = load_series(real_ct_images)
    image = _check_exported(series, real_ct_images, tmp_path)
    assert image.get_data_dtype() == np.int16  # raw HU: integers, stored in half the bytes
    assert image.header.get_qform(coded=True)[1] == 1
    assert np.allclose(image.header.get_qform(), image.affine, atol=1e-3)
    assert image.header["descrip"].item() == b"dicomnode CT HU"


def test_pet_phantom_affine_and_voxels(tmp_path: Path) -> None:
    files = list(write_pet_phantom(tmp_path / "dicom", PET).paths)
    image = _check_exported(load_series(files), files, tmp_path)
    assert image.get_data_dtype() == np.float32  # Bq/ml after a rescale slope


def test_an_oblique_grid_of_unequal_spacing_maps_each_axis(tmp_path: Path) -> None:
    """Rows and columns, spaced 3 and 5 mm, along rotated directions: a swap shows."""
    files = list(write_pet_phantom(tmp_path / "dicom", PET).paths)
    a, b = math.radians(25), math.radians(-40)
    rotation = np.array(
        [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    ) @ np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    row_direction, column_direction = rotation[:, 0], rotation[:, 1]
    normal = np.cross(row_direction, column_direction)
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [3, 5]
        origin = np.array([-30.0, 12.5, 40.0]) - k * 4.0 * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin]
        ds.save_as(path)
    _check_exported(load_series(files), files, tmp_path)


def test_a_sheared_grid_keeps_an_exact_sform_and_no_qform() -> None:
    tan = math.tan(math.radians(15))
    geometry = Geometry(
        origin=(10.0, 20.0, 30.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(2.0, 1.0, 1.0),
        shear=(0.0, tan, 0.0),
    )
    volume = Volume(np.zeros((4, 3, 5), np.float32), geometry, (), "CT", "HU")
    image = to_nifti(volume)
    assert image.header.get_qform(coded=True)[1] == 0
    assert image.header.get_sform(coded=True)[1] == 1
    # Slice 3 starts 3 * 2 mm up and 3 * 2 * tan(15 deg) mm posterior (LPS +y, RAS -y).
    corner = image.affine @ np.array([0, 0, 3, 1.0])
    assert np.allclose(corner[:3], [-10.0, -20.0 - 6 * tan, 36.0])


def test_an_irregular_stack_is_refused(tmp_path: Path) -> None:
    files = list(write_pet_phantom(tmp_path, PET).paths)
    del files[3]  # a gap: one spacing twice as large
    volume = load_series(files, irregular=True).volume
    assert not volume.geometry.regular
    with pytest.raises(ExportError, match="irregularly spaced"):
        to_nifti(volume)


def test_a_stacked_volume_is_a_vector_image(tmp_path: Path) -> None:
    volume = load_series(list(write_pet_phantom(tmp_path, PET).paths)).volume
    channels = np.stack([volume.array, volume.array * 2], axis=-1)
    image = to_nifti(volume.with_array(channels))
    assert image.shape == (48, 40, 10, 1, 2)
    assert image.header.get_intent()[0] == "vector"
    assert np.array_equal(np.asarray(image.dataobj)[:, :, :, 0, 1], channels[..., 1].T)


def test_save_is_atomic_and_only_nii_gz(tmp_path: Path) -> None:
    volume = Volume(np.ones((2, 2, 2), np.float32), _axial(), (), "CT", "HU")
    with pytest.raises(ExportError, match=r"\.nii\.gz"):
        save_nifti(to_nifti(volume), tmp_path / "scan.nii")
    save_nifti(to_nifti(volume), tmp_path / "scan.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nii.gz"]  # no temporary left


def test_dynamic_phantom_as_4d(tmp_path: Path) -> None:
    written = write_pet_phantom(tmp_path / "dicom", DYNAMIC)
    dynamic = load_dynamic(list(reversed(written.paths)))
    image = to_nifti_4d(dynamic.volumes, dynamic.frame_seconds)
    path = tmp_path / "dynamic.nii.gz"
    save_nifti(image, path)
    loaded = nib.load(path)
    assert loaded.shape == (32, 24, 6, 3)
    data = np.asarray(loaded.dataobj)
    for t, volume in enumerate(dynamic.volumes):
        assert np.array_equal(data[..., t], volume.array.transpose(2, 1, 0))
    # The lesions take up tracer frame by frame: the time axis is in acquisition order.
    peaks = [float(data[..., t].max()) for t in range(3)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert loaded.header.get_zooms()[3] == pytest.approx(180.0)
    assert float(loaded.header["toffset"]) == pytest.approx(dynamic.frame_seconds[0], abs=1e-3)
    assert loaded.header.get_xyzt_units() == ("mm", "sec")
    first = _check_exported(dynamic.frames[0], list(written.paths), tmp_path)
    assert np.allclose(loaded.affine, first.affine)
    sidecar = sidecar_path(path)
    timing = frame_timing(dynamic.frame_seconds, dynamic.durations_seconds, dynamic.start_seconds)
    save_sidecar(timing, sidecar)
    assert sidecar.name == "dynamic.json"
    saved = json.loads(sidecar.read_text())
    assert saved["FrameTimesStart"] == [0.0, 180.0, 360.0]
    assert saved["FrameDuration"] == [180.0, 180.0, 180.0]


def test_4d_refuses_frames_on_other_grids_and_unordered_times() -> None:
    frame = Volume(np.zeros((2, 3, 4), np.float32), _axial(), (), "PT", "BQML")
    moved = Geometry((0.0, 0.0, 1.0), *_axial_directions(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ExportError, match="another grid"):
        to_nifti_4d([frame, frame.with_array(frame.array, geometry=moved)], [0.0, 60.0])
    with pytest.raises(ExportError, match="another grid"):
        to_nifti_4d([frame, frame.with_array(np.zeros((3, 3, 4), np.float32))], [0.0, 60.0])
    with pytest.raises(ExportError, match="rise"):
        to_nifti_4d([frame, frame], [60.0, 0.0])
    with pytest.raises(ExportError, match="frame times"):
        to_nifti_4d([frame, frame], [0.0])


def _axial_directions() -> tuple[
    tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]
]:
    return (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def _axial() -> Geometry:
    return Geometry((0.0, 0.0, 0.0), *_axial_directions(), spacing=(1.0, 1.0, 1.0))
