"""Volume loading: a series in any file order and transfer syntax, or a clear refusal.

The synthetic CT phantom (64x64, noise so that every slice differs) is the reference: its
expected volume is computed here with plain pydicom, sorted by the z coordinate, which
is the slice normal of its axial slices. Variants of it (tilted, gapped, mixed, PET,
multi-frame) are written by the tests; DCMTK and GDCM make the compressed files.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import highdicom
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    generate_uid,
)

from dicomnode.errors import VolumeError
from dicomnode.phantom import CTPhantomSeries, CTPhantomSpec, ct_phantom_datasets
from dicomnode.phantom import write_ct_phantom as write_phantom
from dicomnode.pipeline.loading import LoadedSeries, load_series, load_volume
from dicomnode.testing.executables import BIN
from dicomnode.testing.transcode import CODECS, LOSSY_CODECS, Codec, convert_files
from dicomnode.volume import Volume

SPEC = CTPhantomSpec(
    slices=12, rows=64, columns=64, pixel_spacing_mm=6.0, slice_thickness_mm=5.0, noise_hu=8
)
CODEC_SPEC = CTPhantomSpec(
    slices=6, rows=64, columns=64, pixel_spacing_mm=6.0, slice_thickness_mm=5.0, noise_hu=8
)
# Lossy codecs on a noisy phantom: measured mean errors are 3 to 15 HU; a wrong order or
# rescale is off by tens to hundreds.
LOSSY_MEAN_HU = 25.0

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Expected:
    """The phantom's volume computed independently, slices in increasing z."""

    array: Array
    uids: tuple[str, ...]
    positions: tuple[tuple[float, float, float], ...]


def expected_volume(datasets: Iterable[Dataset]) -> Expected:
    by_z = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    array = np.stack(
        [
            ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1))
            + float(ds.get("RescaleIntercept", 0))
            for ds in by_z
        ]
    ).astype(np.float32)
    return Expected(
        array=array,
        uids=tuple(str(ds.SOPInstanceUID) for ds in by_z),
        positions=tuple(position(ds) for ds in by_z),
    )


def position(ds: Dataset) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return (x, y, z)


def phantom_datasets(spec: CTPhantomSpec = SPEC) -> list[Dataset]:
    """Fresh datasets of the phantom, in its file order (cranial first), to modify."""
    return list(ct_phantom_datasets(spec))


def write(folder: Path, datasets: Iterable[Dataset], syntax: str | None = None) -> list[Path]:
    """Each dataset as a Part 10 file ``slice_NN.dcm`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        if syntax is not None:
            ds.file_meta.TransferSyntaxUID = UID(syntax)
        path = folder / f"slice_{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def modified(folder: Path, change: Callable[[int, Dataset], Dataset | None]) -> list[Path]:
    """The phantom with ``change(index, ds)`` applied; a change returning None drops it."""
    kept = [change(i, ds) for i, ds in enumerate(phantom_datasets())]
    return write(folder, [ds for ds in kept if ds is not None])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> CTPhantomSeries:
    return write_phantom(tmp_path_factory.mktemp("phantom"), SPEC)


@pytest.fixture(scope="module")
def expected() -> Expected:
    return expected_volume(phantom_datasets())


@pytest.fixture(scope="module")
def loaded(phantom: CTPhantomSeries) -> LoadedSeries:
    return load_series(phantom.paths)


def assert_same_volume(actual: Volume, reference: Volume) -> None:
    np.testing.assert_array_equal(actual.array, reference.array)
    assert actual.geometry == reference.geometry
    assert actual.refs == reference.refs


# --- the phantom as written ---------------------------------------------------------


def test_slices_are_sorted_along_the_normal_and_rescaled_to_hu(
    loaded: LoadedSeries, expected: Expected, phantom: CTPhantomSeries
) -> None:
    volume = loaded.volume
    assert volume.array.dtype == np.float32
    assert volume.shape == (12, 64, 64)
    np.testing.assert_array_equal(volume.array, expected.array)
    assert tuple(ref.sop_instance_uid for ref in volume.refs) == expected.uids
    assert {ref.sop_class_uid for ref in volume.refs} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert all(ref.frame_number is None for ref in volume.refs)
    assert (volume.modality, volume.units) == ("CT", "HU")
    assert volume.study_instance_uid == phantom.study_instance_uid
    assert volume.series_instance_uid == phantom.series_instance_uid
    assert volume.frame_of_reference_uid == phantom.frame_of_reference_uid


def test_geometry_places_every_slice_at_its_position(
    loaded: LoadedSeries, expected: Expected
) -> None:
    geometry = loaded.volume.geometry
    assert geometry.origin == expected.positions[0]
    assert geometry.row_direction == (1.0, 0.0, 0.0)
    assert geometry.column_direction == (0.0, 1.0, 0.0)
    assert geometry.slice_direction == (0.0, 0.0, 1.0)
    assert geometry.spacing == (5.0, 6.0, 6.0)
    affine = geometry.affine()
    for z, position in enumerate(expected.positions):
        np.testing.assert_allclose((affine @ [z, 0, 0, 1])[:3], position, atol=1e-6)


def test_metadata_holds_what_steps_need_and_is_json(loaded: LoadedSeries) -> None:
    metadata = loaded.volume.metadata
    assert metadata["Rows"] == 64
    assert metadata["Columns"] == 64
    assert metadata["WindowCenter"] == 40.0
    assert metadata["WindowWidth"] == 400.0
    assert metadata["BodyPartExamined"] == "ABDOMEN"
    assert metadata["SeriesDescription"] == SPEC.series_description
    assert json.loads(json.dumps(metadata)) == metadata


def test_sources_are_headers_in_z_order(loaded: LoadedSeries) -> None:
    sources, refs = loaded.sources, loaded.volume.refs
    assert [str(ds.SOPInstanceUID) for ds in sources] == [r.sop_instance_uid for r in refs]
    assert not any("PixelData" in ds for ds in sources)
    assert all(ds.Modality == "CT" for ds in sources)


def test_shuffled_files_give_the_same_volume(
    phantom: CTPhantomSeries, loaded: LoadedSeries
) -> None:
    paths = list(phantom.paths)
    random.Random(7).shuffle(paths)
    assert paths != list(phantom.paths)
    assert_same_volume(load_volume(paths), loaded.volume)


def test_instance_numbers_do_not_decide_the_order(tmp_path: Path, loaded: LoadedSeries) -> None:
    def reverse_numbers(i: int, ds: Dataset) -> Dataset:
        ds.InstanceNumber = SPEC.slices - i
        return ds

    assert_same_volume(load_volume(modified(tmp_path, reverse_numbers)), loaded.volume)


def test_an_instance_received_twice_counts_once(
    phantom: CTPhantomSeries, tmp_path: Path, loaded: LoadedSeries
) -> None:
    copy = tmp_path / "copy.dcm"
    shutil.copy(phantom.paths[4], copy)
    assert_same_volume(load_volume([*phantom.paths, copy]), loaded.volume)


def test_non_images_in_the_series_are_skipped(
    phantom: CTPhantomSeries, tmp_path: Path, loaded: LoadedSeries
) -> None:
    kos = key_object(phantom, tmp_path)
    assert_same_volume(load_volume([kos, *phantom.paths]), loaded.volume)


def key_object(phantom: CTPhantomSeries, folder: Path) -> Path:
    """A Key Object Selection in the phantom's series: a DICOM instance, not an image."""
    ds = Dataset()
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = phantom.study_instance_uid
    ds.SeriesInstanceUID = phantom.series_instance_uid
    ds.Modality = "KO"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "kos.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_normal_pointing_down_sorts_from_the_top(tmp_path: Path, expected: Expected) -> None:
    def columns_up(_i: int, ds: Dataset) -> Dataset:
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
        return ds

    volume = load_volume(modified(tmp_path, columns_up))
    assert volume.geometry.slice_direction == (0.0, 0.0, -1.0)
    assert volume.geometry.origin == expected.positions[-1]
    np.testing.assert_array_equal(volume.array, expected.array[::-1])


def test_a_sagittal_stack_sorts_along_its_normal(tmp_path: Path) -> None:
    def sagittal(i: int, ds: Dataset) -> Dataset:
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [i * 5.0, -100, 100]
        return ds

    volume = load_volume(modified(tmp_path, sagittal))
    assert volume.geometry.slice_direction == (-1.0, 0.0, 0.0)  # (0,1,0) x (0,0,-1)
    assert volume.geometry.origin == ((SPEC.slices - 1) * 5.0, -100.0, 100.0)
    assert volume.geometry.spacing == (5.0, 6.0, 6.0)


def test_spacing_is_the_median_of_all_gaps(tmp_path: Path) -> None:
    def jitter(i: int, ds: Dataset) -> Dataset:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + (0.03 if i == 0 else 0.0)]  # one gap 0.6 % off
        return ds

    assert load_volume(modified(tmp_path, jitter)).geometry.spacing[0] == 5.0


def test_spacing_tolerance_is_a_parameter(tmp_path: Path) -> None:
    def jitter(i: int, ds: Dataset) -> Dataset:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + (0.15 if i == 0 else 0.0)]  # 3 % off
        return ds

    paths = modified(tmp_path, jitter)
    with pytest.raises(VolumeError, match="irregular slice spacing"):
        load_volume(paths)
    assert load_volume(paths, spacing_tolerance=0.05).shape == (12, 64, 64)


def test_a_single_slice_takes_its_thickness_as_spacing(phantom: CTPhantomSeries) -> None:
    volume = load_volume(phantom.paths[3:4])
    assert volume.shape == (1, 64, 64)
    assert volume.geometry.spacing == (5.0, 6.0, 6.0)


def test_a_single_slice_without_thickness_gets_one_mm(tmp_path: Path) -> None:
    ds = phantom_datasets()[0]
    del ds.SliceThickness
    assert load_volume(write(tmp_path, [ds])).geometry.spacing == (1.0, 6.0, 6.0)


# --- transfer syntaxes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def codec_phantom(tmp_path_factory: pytest.TempPathFactory) -> CTPhantomSeries:
    return write_phantom(tmp_path_factory.mktemp("codec-phantom"), CODEC_SPEC)


def requires_tool(kind: Codec) -> None:
    program = CODECS[kind][0][0]
    if not (BIN / program).is_file():
        pytest.skip(f"{BIN / program} is not installed")


@pytest.mark.parametrize("kind", sorted(CODECS))
def test_each_transfer_syntax_loads(
    kind: Codec, codec_phantom: CTPhantomSeries, tmp_path: Path
) -> None:
    requires_tool(kind)
    reference = load_series(codec_phantom.paths)
    converted = load_series(convert_files(list(codec_phantom.paths), tmp_path, kind))
    volume = converted.volume
    assert volume.geometry == reference.volume.geometry
    assert volume.units == "HU"
    # Lossy kinds get new SOP Instance UIDs: the order is checked by instance number.
    numbers = [int(ds.InstanceNumber) for ds in converted.sources]
    assert numbers == [int(ds.InstanceNumber) for ds in reference.sources]
    if kind in LOSSY_CODECS:
        error = np.abs(volume.array - reference.volume.array)
        assert float(error.mean()) < LOSSY_MEAN_HU
    else:
        assert_same_volume(volume, reference.volume)


def test_deflated_files_load(tmp_path: Path, loaded: LoadedSeries) -> None:
    paths = write(tmp_path, phantom_datasets(), DeflatedExplicitVRLittleEndian)
    assert str(pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID) == (
        DeflatedExplicitVRLittleEndian
    )
    assert_same_volume(load_volume(paths), loaded.volume)


@pytest.mark.parametrize("size", [64, 256], ids=["read-with-header", "read-at-offset"])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_uncompressed_values_equal_pydicoms_with_junk_above_bits_stored(
    tmp_path: Path, size: int, syntax: str
) -> None:
    """Signed 12-bit values in 16 bits, the 4 unused bits set: sign-extended, as pydicom does.

    64x64 pixel data is read with the header; 256x256 (128 KB) is deferred and read from
    the file at its offset.
    """
    spec = CTPhantomSpec(
        slices=3, rows=size, columns=size, pixel_spacing_mm=1.5, slice_thickness_mm=5.0
    )
    datasets = phantom_datasets(spec)
    for ds in datasets:
        signed = ds.pixel_array.astype(np.int16) - 1024  # within 12-bit signed
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 12, 11
        ds.RescaleIntercept = 0
        junk = (signed.view(np.uint16) & 0x0FFF) | 0xA000
        ds.PixelData = junk.astype("<u2").tobytes()
    paths = write(tmp_path, datasets, syntax)
    expected = expected_volume(pydicom.dcmread(path) for path in paths)
    assert float(expected.array.min()) < 0  # the sign came through
    np.testing.assert_array_equal(load_volume(paths).array, expected.array)


# --- multi-frame ---------------------------------------------------------------------


def enhanced_ct(datasets: list[Dataset]) -> Dataset:
    """A Legacy Converted Enhanced CT of the phantom: one instance, a frame per slice."""
    return highdicom.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=highdicom.UID(),
        series_number=2,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )


@pytest.fixture(scope="module")
def multiframe() -> Dataset:
    return enhanced_ct(phantom_datasets())


def write_one(folder: Path, ds: Dataset) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "multiframe.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_enhanced_multiframe_equals_its_single_frames(
    multiframe: Dataset, tmp_path: Path, loaded: LoadedSeries
) -> None:
    result = load_series([write_one(tmp_path, multiframe)])
    volume = result.volume
    np.testing.assert_array_equal(volume.array, loaded.volume.array)
    assert volume.geometry == loaded.volume.geometry
    assert (volume.modality, volume.units) == ("CT", "HU")
    assert {ref.sop_instance_uid for ref in volume.refs} == {str(multiframe.SOPInstanceUID)}
    # The frames are stored cranial first: increasing z runs from the last frame.
    assert [ref.frame_number for ref in volume.refs] == list(range(SPEC.slices, 0, -1))
    assert len(result.sources) == 1
    assert "PixelData" not in result.sources[0]
    assert volume.metadata["WindowCenter"] == 40.0


def test_a_compressed_multiframe_loads_frame_by_frame(
    multiframe: Dataset, tmp_path: Path, loaded: LoadedSeries
) -> None:
    compressed = pydicom.dcmread(write_one(tmp_path / "native", multiframe))
    compressed.compress(RLELossless)
    volume = load_volume([write_one(tmp_path / "rle", compressed)])
    np.testing.assert_array_equal(volume.array, loaded.volume.array)


def test_a_per_frame_rescale_overrides_the_shared_one(
    multiframe: Dataset, tmp_path: Path, loaded: LoadedSeries
) -> None:
    ds = pydicom.dcmread(write_one(tmp_path / "native", multiframe))
    rescale = Dataset()
    rescale.RescaleSlope = 1
    rescale.RescaleIntercept = -1000  # 24 HU above the shared -1024
    rescale.RescaleType = "HU"
    ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence = [rescale]
    volume = load_volume([write_one(tmp_path / "changed", ds)])
    # Frame 1 is the most cranial slice, the last along z.
    np.testing.assert_array_equal(volume.array[-1], loaded.volume.array[-1] + 24)
    np.testing.assert_array_equal(volume.array[:-1], loaded.volume.array[:-1])


def test_a_multiframe_without_frame_positions_is_refused(
    multiframe: Dataset, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(write_one(tmp_path / "native", multiframe))
    for group in ds.PerFrameFunctionalGroupsSequence[2:4]:
        del group.PlanePositionSequence
    path = write_one(tmp_path / "changed", ds)
    with pytest.raises(
        VolumeError,
        match=r"missing ImagePositionPatient in 2 of 12 images \(e\.g\. multiframe\.dcm frame 3\)",
    ):
        load_volume([path])


def test_a_classic_multiframe_without_positions_is_refused(tmp_path: Path) -> None:
    ds = phantom_datasets()[0]
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    with pytest.raises(
        VolumeError, match=r"multi-frame image \(3 frames\) without per-frame positions"
    ):
        load_volume(write(tmp_path, [ds]))


# --- refusals ------------------------------------------------------------------------


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    def shrink_one(i: int, ds: Dataset) -> Dataset:
        if i == 7:
            ds.Rows, ds.Columns = 32, 32
            ds.PixelData = np.zeros((32, 32), np.uint16).tobytes()
        return ds

    with pytest.raises(
        VolumeError,
        match=r"slices have different sizes \(rows x columns\): "
        r"64x64 \(11 slices\) and 32x32 \(1 slice\)$",
    ):
        load_volume(modified(tmp_path, shrink_one))


def test_a_missing_slice_is_refused(phantom: CTPhantomSeries) -> None:
    paths = [p for i, p in enumerate(phantom.paths) if i != 5]
    with pytest.raises(
        VolumeError,
        match=r"irregular slice spacing: 5 mm expected, 10 mm between slices 6 and 7 "
        r"\(a missing slice\?\)",
    ):
        load_volume(paths)


def test_a_gantry_tilt_loads_as_a_sheared_stack(tmp_path: Path) -> None:
    tilt = math.radians(15)

    def tilted(_i: int, ds: Dataset) -> Dataset:
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(tilt), math.sin(tilt)]
        return ds

    geometry = load_volume(modified(tmp_path, tilted)).geometry
    assert geometry.tilt_degrees == pytest.approx(15.0, abs=0.01)
    # 5 mm along z is 5 cos(15) mm along the tilted normal.
    assert geometry.spacing[0] == pytest.approx(5.0 * math.cos(tilt))


def test_a_tilt_within_the_lateral_tolerance_loads(tmp_path: Path) -> None:
    def nudged(i: int, ds: Dataset) -> Dataset:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + 0.03 * (i % 2), y, z]  # 0.005 pixels
        return ds

    assert load_volume(modified(tmp_path, nudged)).shape == (12, 64, 64)


def test_duplicated_positions_are_refused(phantom: CTPhantomSeries, tmp_path: Path) -> None:
    twin = pydicom.dcmread(phantom.paths[3])
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    twin_path = write(tmp_path, [twin])[0]
    with pytest.raises(VolumeError, match=r"duplicated slice positions: .* 1 pair in all"):
        load_volume([*phantom.paths, twin_path])


def test_missing_positions_are_refused(tmp_path: Path) -> None:
    def drop_position(i: int, ds: Dataset) -> Dataset:
        if i in (2, 9):
            del ds.ImagePositionPatient
        return ds

    with pytest.raises(
        VolumeError,
        match=r"missing ImagePositionPatient in 2 of 12 images \(e\.g\. slice_02\.dcm\)",
    ):
        load_volume(modified(tmp_path, drop_position))


def test_several_orientations_are_refused(tmp_path: Path) -> None:
    def one_sagittal(i: int, ds: Dataset) -> Dataset:
        if i == 0:
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        return ds

    with pytest.raises(
        VolumeError,
        match=r"several orientations in one series .*: ImageOrientationPatient "
        r"\[1, 0, 0, 0, 1, 0\] \(11 slices\) and \[0, 1, 0, 0, 0, -1\] \(1 slice\)",
    ):
        load_volume(modified(tmp_path, one_sagittal))


def test_mixed_pixel_spacings_are_refused(tmp_path: Path) -> None:
    def finer_one(i: int, ds: Dataset) -> Dataset:
        if i == 4:
            ds.PixelSpacing = [3, 3]
        return ds

    with pytest.raises(
        VolumeError,
        match=r"different pixel spacings: 6x6 mm \(11 slices\) and 3x3 mm \(1 slice\)",
    ):
        load_volume(modified(tmp_path, finer_one))


def test_two_series_are_refused(tmp_path: Path) -> None:
    def other_series(i: int, ds: Dataset) -> Dataset:
        if i == 0:
            ds.SeriesInstanceUID = generate_uid()
        return ds

    with pytest.raises(VolumeError, match="do not share one SeriesInstanceUID"):
        load_volume(modified(tmp_path, other_series))


def test_a_series_without_images_is_refused(phantom: CTPhantomSeries, tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="none of the 1 files is an image"):
        load_volume([key_object(phantom, tmp_path)])


def test_a_file_that_is_not_dicom_is_refused(phantom: CTPhantomSeries, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    with pytest.raises(VolumeError, match=r"cannot read notes\.txt as DICOM"):
        load_volume([*phantom.paths, notes])


def test_truncated_pixel_data_is_refused(phantom: CTPhantomSeries, tmp_path: Path) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(phantom.paths[3].read_bytes()[:-1000])
    paths = [*phantom.paths[:3], broken, *phantom.paths[4:]]
    with pytest.raises(VolumeError, match=r"cannot decode the pixel data of broken\.dcm"):
        load_volume(paths)


def test_a_truncated_compressed_file_is_refused(phantom: CTPhantomSeries, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom.paths[3])
    ds.compress(RLELossless)
    broken = write(tmp_path, [ds])[0]
    broken.write_bytes(broken.read_bytes()[:-300])
    paths = [*phantom.paths[:3], broken, *phantom.paths[4:]]
    with (
        pytest.warns(UserWarning, match="End of file"),
        pytest.raises(VolumeError, match=r"cannot read slice_00\.dcm: its dataset is empty"),
    ):
        load_volume(paths)


# --- PET -----------------------------------------------------------------------------


def pet_datasets() -> list[Dataset]:
    """The phantom as a PET series: BQML, a rescale slope per slice, times per slice."""
    datasets = phantom_datasets()
    drug = Dataset()
    drug.Radiopharmaceutical = "Fluorodeoxyglucose F^18^"
    drug.RadiopharmaceuticalStartTime = "090000"
    drug.RadiopharmaceuticalStartDateTime = "20240115090000"
    drug.RadionuclideTotalDose = 370000000
    drug.RadionuclideHalfLife = 6586.2
    for i, ds in enumerate(datasets):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
            PositronEmissionTomographyImageStorage
        )
        ds.Modality = "PT"
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.PatientWeight = 72.5
        ds.RescaleSlope = round(0.5 + 0.125 * i, 3)
        ds.RescaleIntercept = 0
        del ds.RescaleType
        minutes = 60 - i  # the last file is the earliest: 09:49
        ds.AcquisitionTime = f"{9 + minutes // 60:02d}{minutes % 60:02d}00"
        ds.RadiopharmaceuticalInformationSequence = [drug]
    return datasets


def test_pet_keeps_its_units_per_slice_slopes_and_decay_metadata(tmp_path: Path) -> None:
    datasets = pet_datasets()
    reference = expected_volume(pydicom.dcmread(p) for p in write(tmp_path / "ref", datasets))
    volume = load_volume(write(tmp_path / "pet", pet_datasets()))
    assert (volume.modality, volume.units) == ("PT", "BQML")
    np.testing.assert_allclose(volume.array, reference.array, rtol=1e-6)
    assert {ref.sop_class_uid for ref in volume.refs} == {PositronEmissionTomographyImageStorage}
    metadata = volume.metadata
    assert {k: metadata[k] for k in ("Units", "DecayCorrection", "CorrectedImage")} == {
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY"],
    }
    assert metadata["PatientWeight"] == 72.5
    assert metadata["SeriesDate"] == "20240115"
    assert metadata["SeriesTime"] == "093000"
    assert metadata["AcquisitionDate"] == "20240115"
    assert metadata["AcquisitionTime"] == "094900"  # the earliest of the series
    assert metadata["RadiopharmaceuticalStartTime"] == "090000"
    assert metadata["RadiopharmaceuticalStartDateTime"] == "20240115090000"
    assert metadata["RadionuclideTotalDose"] == 370000000.0
    assert metadata["RadionuclideHalfLife"] == 6586.2
    assert "WindowCenter" not in metadata
    assert json.loads(json.dumps(metadata)) == metadata


# --- the real CT ---------------------------------------------------------------------

REAL_CT_KINDS: list[Codec] = ["jpeg-lossless", "jpeg-ls", "rle", "j2k"]  # one per plugin


@pytest.fixture(scope="module")
def real_ct(real_ct_images: list[Path]) -> LoadedSeries:
    return load_series(real_ct_images)


def test_the_real_ct_loads_in_position_order(
    real_ct_dir: Path, real_ct_images: list[Path], real_ct: LoadedSeries
) -> None:
    paths = [*real_ct_images, real_ct_dir / "DIRFILE"]  # the vendor's directory: skipped
    random.Random(3).shuffle(paths)
    volume = load_volume(paths)
    assert_same_volume(volume, real_ct.volume)
    assert volume.shape == (28, 512, 512)
    assert volume.geometry.origin == (-115.5, -1.85, 696.21)
    assert volume.geometry.spacing == pytest.approx((5.0, 0.451171875, 0.451171875))
    assert [int(ds.InstanceNumber) for ds in real_ct.sources] == list(range(1, 29))
    reference = expected_volume(pydicom.dcmread(p) for p in real_ct_images)
    np.testing.assert_array_equal(volume.array, reference.array)
    assert float(volume.array.min()) == pytest.approx(-1024, abs=30)  # air, in HU


@pytest.mark.parametrize("kind", REAL_CT_KINDS)
def test_the_real_ct_loads_compressed(
    kind: Codec, real_ct_images: list[Path], real_ct: LoadedSeries, tmp_path: Path
) -> None:
    requires_tool(kind)
    volume = load_volume(convert_files(real_ct_images, tmp_path, kind))
    assert_same_volume(volume, real_ct.volume)
