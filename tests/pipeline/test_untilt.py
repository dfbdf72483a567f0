"""Volumetric models on a tilted series: the input made regular as dcm2niix does, labels back.

A block stacked straight along the normal, then sheared by whole pixels per slice as a
tilted gantry acquires it, must come back as the straight block; its labels must go back
onto the sheared slices. End to end, a volumetric (python) model on the tilted phantom
gets the corrected volume, and a slice-wise one does not need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_gantry_tilt import PIPELINE, SPEC, tilted_copy

from dicomnode.phantom import write_ct_phantom
from dicomnode.pipeline.definition import parse_models, parse_pipelines, reference_definitions
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.pipeline.steps.grid import moved
from dicomnode.pipeline.tilt import untilt
from dicomnode.runners import ModelHost
from dicomnode.volume import Geometry, SliceRef, Volume

VOLUMETRIC = "body-volumetric"


def sheared_block() -> tuple[Volume, np.ndarray]:
    """A block sheared one pixel in y and two in x per slice; and the straight block.

    Slice z lies z pixels further in y and 2z in x, so the block that stands straight in
    the patient appears z and 2z pixels back in its pixels.
    """
    straight = np.full((5, 20, 24), -1000.0, dtype=np.float32)
    straight[:, 8:12, 12:17] = 500.0
    sheared = np.full_like(straight, -1000.0)
    for z in range(5):
        sheared[z] = np.roll(np.roll(straight[z], -z, axis=0), -2 * z, axis=1)
    dz, dy, dx = 2.0, 0.5, 0.8
    geometry = Geometry(
        origin=(10.0, 20.0, 30.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(dz, dy, dx),
        # Per mm along the normal: dy mm in y and 2 dx mm in x per slice.
        shear=(2 * dx / dz, dy / dz, 0.0),
    )
    refs = tuple(SliceRef("1.2", f"1.2.{z}") for z in range(5))
    return Volume(sheared, geometry, refs, "CT", "HU"), straight


def test_untilt_restacks_a_sheared_block_straight_and_maps_labels_back() -> None:
    volume, straight = sheared_block()
    assert volume.geometry.sheared
    result = untilt(volume)
    assert not result.volume.geometry.sheared
    assert result.volume.geometry.spacing == volume.geometry.spacing
    np.testing.assert_allclose(result.volume.array, straight)
    np.testing.assert_allclose(result.shifts, [[z, 2 * z] for z in range(5)])
    labels = (result.volume.array > 0).astype(np.uint8)
    np.testing.assert_array_equal(result.labels_back(labels), volume.array > 0)


def test_untilt_interpolates_half_pixels_and_fills_with_the_minimum() -> None:
    volume, _straight = sheared_block()
    geometry = volume.geometry
    half = Geometry(
        geometry.origin,
        geometry.row_direction,
        geometry.column_direction,
        geometry.slice_direction,
        geometry.spacing,
        shear=(0.5 * 0.8 / 2.0, 0.0, 0.0),  # half a pixel in x per slice
    )
    ramp = np.tile(np.arange(24, dtype=np.float32), (5, 20, 1))
    result = untilt(Volume(ramp, half, volume.refs, "CT", "HU"))
    # Slice 1 lies half a pixel further in x, slice 2 a whole one: a ramp moves as much.
    np.testing.assert_allclose(result.volume.array[1, 0, 1:], np.arange(1, 24) - 0.5)
    np.testing.assert_allclose(result.volume.array[2, 0, 1:], np.arange(23))
    assert result.volume.array[2, 0, 0] == 0.0  # outside the slice: the minimum


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineEngine]:
    models, pipelines = reference_definitions()
    models |= parse_models(
        {
            VOLUMETRIC: {
                "kind": "python",
                "function": "dicomnode.models.pet_suv_reference:threshold",
                "options": {"threshold": -500},  # the body: above air
            }
        },
        "test",
    )
    reference = pipelines[PIPELINE].model_dump(mode="json")
    soft = [s for s in reference["output"]["segments"] if s["name"] == "Soft tissue"]
    pipelines |= parse_pipelines(
        {
            VOLUMETRIC: {
                **reference,
                "model": VOLUMETRIC,
                "output": {
                    **reference["output"],
                    "segments": [{**soft[0], "label": 1, "name": "Body"}],
                },
            }
        },
        "test",
    )
    with ModelHost(models, tmp_path_factory.mktemp("models")) as host:
        yield PipelineEngine(pipelines, host)


def _stages(result: RunResult) -> list[str]:
    return [stage.name for stage in result.stages]


def _body_ml(result: RunResult) -> float:
    (region,) = [r for r in result.summary["regions"] if r["name"] == "Body"]
    return float(region["volume_ml"])


def test_a_volumetric_model_gets_the_tilt_corrected_and_its_seg_follows_the_slices(
    engine: PipelineEngine, tmp_path: Path
) -> None:
    phantom = write_ct_phantom(tmp_path / "straight", SPEC).paths
    tilted = tilted_copy(phantom, tmp_path / "tilted")
    straight_result = engine.run(VOLUMETRIC, phantom)
    tilted_result = engine.run(VOLUMETRIC, tilted)
    assert "untilt" not in _stages(straight_result)
    assert "untilt" in _stages(tilted_result)
    assert "untilt" not in _stages(engine.run(PIPELINE, tilted))  # slice-wise: as acquired
    # The pixels were only moved in-plane and back: the volume is nearly the same.
    assert _body_ml(tilted_result) == pytest.approx(_body_ml(straight_result), rel=0.01)
    (seg,) = [ds for ds in tilted_result.datasets if ds.Modality == "SEG"]
    (straight_seg,) = [ds for ds in straight_result.datasets if ds.Modality == "SEG"]
    # Same pixels, so the labels mapped back onto the acquired slices are the straight
    # series' labels, but for the edge pixels that interpolation moved.
    tilted_mask, straight_mask = seg.pixel_array.astype(bool), straight_seg.pixel_array.astype(bool)
    assert tilted_mask.shape == straight_mask.shape
    assert np.count_nonzero(tilted_mask ^ straight_mask) < 0.02 * np.count_nonzero(straight_mask)
    positions = {
        str(h.SOPInstanceUID): [float(v) for v in h.ImagePositionPatient]
        for h in (pydicom.dcmread(p, stop_before_pixels=True) for p in tilted)
    }
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        uid = str(source.ReferencedSOPInstanceUID)
        assert uid in positions
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            positions[uid],
            atol=1e-3,
        )


def test_grid_steps_keep_a_sheared_grid_in_place() -> None:
    """Resampling keeps the shear per mm: the new slices lie on the acquired stack's line."""
    volume, _straight = sheared_block()
    geometry = volume.geometry
    dz, dy, dx = geometry.spacing
    coarser = moved(geometry, (0.0, 0.0, 0.0), spacing=(2 * dz, dy / 2, dx))
    np.testing.assert_allclose(
        coarser.affine() @ [1.0, 2.0, 0.0, 1.0], geometry.affine() @ [2.0, 1.0, 0.0, 1.0]
    )
    assert coarser.voxel_volume_ml == pytest.approx(geometry.voxel_volume_ml)
