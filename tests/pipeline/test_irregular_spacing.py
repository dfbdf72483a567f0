"""Irregularly spaced slices: slice-wise pipelines run on them, each slice its own thickness.

A slice-by-slice model needs no regular grid: it sees each acquired slice alone. Its
measurements weigh each slice by the extent it stands for along the normal (half the
distance between its neighbours). A volumetric model, or a step that moves the grid,
needs one regular grid: it gets the slices interpolated at the median spacing, and its
labels go back to the acquired slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_gantry_tilt import PIPELINE, SPEC
from test_untilt import VOLUMETRIC
from test_untilt import engine as volumetric_engine  # noqa: F401  (a fixture)

from dicomnode.errors import VolumeError
from dicomnode.phantom import write_ct_phantom
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.pipeline.loading import load_series
from dicomnode.pipeline.measure import region_stats
from dicomnode.pipeline.tilt import regularize
from dicomnode.volume import Geometry, SliceRef, Volume

DROPPED = 6  # of the phantom's 12 slices: a 10 mm gap among 5 mm ones


def geometry(offsets: tuple[float, ...] | None) -> Geometry:
    return Geometry(
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(5.0, 2.0, 1.0),
        slice_offsets=offsets,
    )


def test_each_slice_stands_for_half_the_distance_between_its_neighbours() -> None:
    irregular = geometry((0.0, 5.0, 10.0, 20.0, 25.0))
    assert not irregular.regular
    np.testing.assert_allclose(irregular.slice_thicknesses(5), [5, 5, 7.5, 7.5, 5])
    np.testing.assert_allclose(irregular.slice_voxel_ml(5), [0.01, 0.01, 0.015, 0.015, 0.01])
    np.testing.assert_allclose(geometry(None).slice_thicknesses(3), [5, 5, 5])
    with pytest.raises(ValueError, match="no affine grid"):
        irregular.affine()


def test_region_volumes_weigh_each_slice_by_its_own_voxel_volume() -> None:
    labels = np.zeros((3, 2, 2), dtype=np.uint8)
    labels[0, 0, 0] = labels[2][0, 0] = 1
    labels[2, 1] = 1  # slice 2 holds three voxels of label 1
    values = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    (stats,) = region_stats(labels, values, [1], np.array([0.01, 0.02, 0.04]))
    assert stats.voxels == 4
    assert stats.volume_ml == pytest.approx(0.01 + 3 * 0.04)
    assert stats.mean == pytest.approx((0 + 8 + 10 + 11) / 4)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_phantom(tmp_path_factory.mktemp("phantom"), SPEC).paths


@pytest.fixture
def gapped(phantom: list[Path]) -> list[Path]:
    by_z = sorted(
        phantom,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    return [p for i, p in enumerate(by_z) if i != DROPPED]


@pytest.fixture(scope="module")
def engine(volumetric_engine: PipelineEngine) -> Iterator[PipelineEngine]:  # noqa: F811
    yield volumetric_engine


def _volumes(result: RunResult) -> dict[str, float]:
    return {r["name"]: float(r["volume_ml"]) for r in result.summary["regions"]}


def test_a_slice_wise_pipeline_runs_on_a_gapped_series_and_measures_it_whole(
    engine: PipelineEngine, phantom: list[Path], gapped: list[Path]
) -> None:
    full = _volumes(engine.run(PIPELINE, phantom))
    result = engine.run(PIPELINE, gapped)
    got = _volumes(result)
    assert got.keys() == full.keys()
    # The gap's 5 mm are covered by its neighbours' halves: the anatomy changes little
    # from slice to slice, so the volumes stay near the complete series'. Counting each
    # slice as the median 5 mm would lose a twelfth (8 %).
    for name, value in full.items():
        assert got[name] == pytest.approx(value, rel=0.03), name
    (seg,) = [ds for ds in result.datasets if ds.Modality == "SEG"]
    sources = {
        str(ds.SOPInstanceUID): [float(v) for v in ds.ImagePositionPatient]
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in gapped)
    }
    referenced = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        referenced.add(uid)
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            sources[uid],
            atol=1e-3,
        )
    assert referenced <= sources.keys()


def test_regularize_interpolates_the_gap_and_maps_labels_back_to_acquired_slices() -> None:
    offsets = (0.0, 5.0, 15.0, 20.0)
    array = np.broadcast_to(np.array(offsets, dtype=np.float32)[:, None, None], (4, 2, 2))
    refs = tuple(SliceRef("1.2", f"1.2.{z}") for z in range(4))
    volume = Volume(array.copy(), geometry(offsets), refs, "CT", "HU")
    result = regularize(volume)
    assert result.volume.geometry.regular
    np.testing.assert_allclose(result.volume.array[:, 0, 0], [0, 5, 10, 15, 20])
    np.testing.assert_array_equal(result.nearest, [0, 1, 3, 4])
    labels = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    np.testing.assert_array_equal(result.labels_back(labels)[:, 0, 0], [0, 1, 3, 4])


def test_a_volumetric_pipeline_gets_a_gapped_series_interpolated_and_segments_its_slices(
    engine: PipelineEngine, phantom: list[Path], gapped: list[Path]
) -> None:
    full = engine.run(VOLUMETRIC, phantom)
    result = engine.run(VOLUMETRIC, gapped)
    assert "regularize" in [stage.name for stage in result.stages]
    assert "regularize" not in [stage.name for stage in engine.run(PIPELINE, gapped).stages]
    assert _volumes(result)["Body"] == pytest.approx(_volumes(full)["Body"], rel=0.03)
    (seg,) = [ds for ds in result.datasets if ds.Modality == "SEG"]
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in gapped}
    referenced = {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced == uids  # the body is on every acquired slice


def test_load_series_keeps_each_slice_offset_when_asked(gapped: list[Path]) -> None:
    with pytest.raises(VolumeError, match="irregular slice spacing"):
        load_series(gapped)
    volume = load_series(gapped, irregular=True).volume
    offsets = volume.geometry.slice_offsets
    assert offsets is not None
    np.testing.assert_allclose(np.diff(offsets), [5.0] * 5 + [10.0] + [5.0] * 4, atol=1e-3)
    assert volume.geometry.spacing[0] == pytest.approx(5.0)
