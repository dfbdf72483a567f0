"""Gantry-tilted (sheared) series: loaded as acquired, segmented slice by slice, measured right.

A tilted acquisition keeps axial Image Orientation but moves each slice in its plane by
``z_offset * tan(tilt)``. The tests make tilted copies of the CT phantom and of the real
CT by shifting Image Position Patient that way (pixels unchanged): the tissue voxel counts
stay the same, and with the spacing measured along the slice normal so do the volumes
(measured along the shear they would be 1/cos(15 degrees), 3.5 %, larger).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.errors import VolumeError
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.pipeline.loading import load_series
from dicomnode.runners import ModelHost
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program

TILT = math.radians(15)
SPEC = CTPhantomSpec(
    slices=12, rows=64, columns=64, pixel_spacing_mm=6.0, slice_thickness_mm=5.0, noise_hu=8
)
PIPELINE = "ct-tissue-reference"


def tilted_copy(
    paths: Sequence[Path],
    folder: Path,
    tilt: float = TILT,
    change: Callable[[int, Dataset], None] | None = None,
) -> list[Path]:
    """The series sheared by ``tilt`` about the x axis, as a tilted gantry acquires it.

    Each slice's position moves in y by its z offset from the lowest slice times
    tan(tilt); orientation and pixels are kept. Series, frame of reference and instances
    get new UIDs, so the copy is a series of its own.
    """
    datasets = [pydicom.dcmread(path) for path in paths]
    z0 = min(float(ds.ImagePositionPatient[2]) for ds in datasets)
    series_uid, frame_uid = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + (z - z0) * math.tan(tilt), 4), z]
        ds.GantryDetectorTilt = round(math.degrees(tilt), 2)
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if change is not None:
            change(i, ds)
        path = folder / f"tilted_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineEngine]:
    models, pipelines = reference_definitions()
    with ModelHost(models, tmp_path_factory.mktemp("models")) as host:
        yield PipelineEngine(pipelines, host)


@pytest.fixture(scope="module")
def phantom_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_phantom(tmp_path_factory.mktemp("phantom"), SPEC).paths


def _by_modality(result: RunResult) -> dict[str, Dataset]:
    return {str(ds.Modality): ds for ds in result.datasets}


def _volumes(result: RunResult) -> dict[str, float]:
    return {r["name"]: float(r["volume_ml"]) for r in result.summary["regions"]}


def _sr_volumes(sr: Dataset) -> list[float]:
    """Every NUM value in ml in the SR's content tree."""
    found: list[float] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                if value.MeasurementUnitsCodeSequence[0].CodeValue == "ml":
                    found.append(float(value.NumericValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def _frames(seg: Dataset, sources: Sequence[Path]) -> list[tuple[int, int]]:
    """(segment, index of its source in ``sources``) per SEG frame, positions checked.

    Each SEG frame must reference one of ``sources`` and carry that image's position.
    """
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
    index = {str(ds.SOPInstanceUID): i for i, ds in enumerate(headers)}
    frames = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        derivation = frame.DerivationImageSequence[0]
        referenced = derivation.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert referenced in index, "a SEG frame references none of the source images"
        source = headers[index[referenced]]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(
            position, [float(v) for v in source.ImagePositionPatient], atol=1e-3
        )
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frames.append((segment, index[referenced]))
    return frames


def _check_seg_follows(
    tilted_seg: Dataset,
    tilted: Sequence[Path],
    straight_seg: Dataset,
    straight: Sequence[Path],
) -> None:
    """The tilted SEG's frames are the straight one's, each on the tilted copy of its source.

    ``tilted[i]`` is the copy of ``straight[i]``; within a segment the frames run through
    the slices in one direction along the stack.
    """
    frames = _frames(tilted_seg, tilted)
    assert frames, "the SEG has no frame"
    assert frames == _frames(straight_seg, straight)
    z = {
        i: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
        for i, p in enumerate(tilted)
    }
    for segment in {s for s, _ in frames}:
        along = [z[i] for s, i in frames if s == segment]
        assert along in (sorted(along), sorted(along, reverse=True)), segment


def test_a_sheared_stack_loads_with_its_shear_and_true_positions(
    phantom_paths: list[Path], tmp_path: Path
) -> None:
    tilted = tilted_copy(phantom_paths, tmp_path)
    straight = load_series(phantom_paths).volume
    loaded = load_series(tilted)
    volume = loaded.volume
    geometry = volume.geometry
    assert geometry.sheared
    assert geometry.tilt_degrees == pytest.approx(15.0, abs=0.01)
    assert geometry.spacing == pytest.approx(straight.geometry.spacing)
    assert geometry.voxel_volume_ml == pytest.approx(straight.geometry.voxel_volume_ml)
    np.testing.assert_array_equal(volume.array, straight.array)
    # Every slice of the grid lies where its source image says it does.
    for z, ref in enumerate(volume.refs):
        source = next(ds for ds in loaded.sources if ds.SOPInstanceUID == ref.sop_instance_uid)
        corner = geometry.affine() @ np.array([z, 0.0, 0.0, 1.0])
        np.testing.assert_allclose(
            corner[:3], [float(v) for v in source.ImagePositionPatient], atol=1e-3
        )


def test_the_sheared_phantom_gets_a_seg_on_its_frames_and_the_untilted_volumes(
    engine: PipelineEngine, phantom_paths: list[Path], tmp_path: Path
) -> None:
    tilted = tilted_copy(phantom_paths, tmp_path)
    straight_result = engine.run(PIPELINE, phantom_paths)
    tilted_result = engine.run(PIPELINE, tilted)
    results = _by_modality(tilted_result)
    assert set(results) == {"SEG", "SR", "OT"}  # OT: the summary image
    straight_seg = _by_modality(straight_result)["SEG"]
    _check_seg_follows(results["SEG"], tilted, straight_seg, phantom_paths)
    expected = _volumes(straight_result)
    assert expected and all(v > 0 for v in expected.values())
    got = _volumes(tilted_result)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=0.01), name
    assert sorted(_sr_volumes(results["SR"])) == pytest.approx(
        sorted(_sr_volumes(_by_modality(straight_result)["SR"])), rel=0.01
    )


def test_the_real_ct_tilted_gets_an_aligned_valid_seg_and_the_untilted_volumes(
    engine: PipelineEngine, real_ct_images: list[Path], tmp_path: Path
) -> None:
    tilted = tilted_copy(real_ct_images, tmp_path / "tilted")
    straight_result = engine.run(PIPELINE, real_ct_images)
    tilted_result = engine.run(PIPELINE, tilted)
    results = _by_modality(tilted_result)
    assert set(results) == {"SEG", "SR", "OT"}  # OT: the summary image
    straight_seg = _by_modality(straight_result)["SEG"]
    _check_seg_follows(results["SEG"], tilted, straight_seg, real_ct_images)
    expected = _sr_volumes(_by_modality(straight_result)["SR"])
    assert expected
    assert sorted(_sr_volumes(results["SR"])) == pytest.approx(sorted(expected), rel=0.01)
    for name, value in _volumes(straight_result).items():
        assert _volumes(tilted_result)[name] == pytest.approx(value, rel=0.01), name

    program = dciodvfy_program()
    if program is None:
        pytest.skip("dciodvfy is not installed: the SEG and SR were not validated")
    for modality, ds in results.items():
        path = tmp_path / f"{modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        errors, report = dciodvfy_errors(path, program)
        assert errors == [], f"dciodvfy on the tilted {modality}:\n{report}"


def test_positions_on_no_one_line_are_refused(phantom_paths: list[Path], tmp_path: Path) -> None:
    def zigzag(i: int, ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + 6.0 * (i % 2), y, z]  # one pixel back and forth

    with pytest.raises(VolumeError, match=r"slice positions lie on no one line: slice \d+"):
        load_series(tilted_copy(phantom_paths, tmp_path, change=zigzag))


def test_a_tilted_series_with_mixed_orientations_is_refused(
    phantom_paths: list[Path], tmp_path: Path
) -> None:
    def turn_one(i: int, ds: Dataset) -> None:
        if i == 4:
            ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(TILT), math.sin(TILT)]

    with pytest.raises(VolumeError, match=r"several orientations in one series"):
        load_series(tilted_copy(phantom_paths, tmp_path, change=turn_one))


def test_a_tilted_series_without_positions_is_refused(
    phantom_paths: list[Path], tmp_path: Path
) -> None:
    def drop_position(i: int, ds: Dataset) -> None:
        if i == 3:
            del ds.ImagePositionPatient

    with pytest.raises(
        VolumeError,
        match=r"missing ImagePositionPatient in 1 of 12 images .*cannot be placed in space",
    ):
        load_series(tilted_copy(phantom_paths, tmp_path, change=drop_position))
