"""8-bit slices: exactly the pipeline's preprocessing output, quantised by ``to_uint8``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageSequence

from dicomnode.datasets.images import slice_name, to_uint8, write_slices
from dicomnode.errors import ExportError
from dicomnode.pipeline.loading import load_volume
from dicomnode.pipeline.steps.config import parse_steps
from dicomnode.pipeline.steps.registry import build_steps
from dicomnode.pipeline.steps.trace import run_steps
from dicomnode.volume import Geometry, Volume

STEPS = """
- {kind: hu}
- {kind: window, center: 40, width: 400, output: unit}
- {kind: resize, rows: 256, columns: 256}
"""


@pytest.fixture(scope="module")
def prepared(real_ct_images: list[Path]) -> Volume:
    steps = build_steps(parse_steps(yaml.safe_load(STEPS)))
    volume, _trace = run_steps(load_volume(real_ct_images), steps)
    return volume


def test_png_slices_are_the_preprocessed_volume(prepared: Volume, tmp_path: Path) -> None:
    paths = write_slices(prepared, tmp_path, "png")
    assert len(paths) == prepared.shape[0] == 28
    assert [p.name for p in paths] == [f"slice-{n:04d}.png" for n in range(1, 29)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]
    for k, path in enumerate(paths):
        with Image.open(path) as picture:
            assert picture.mode == "L"
            assert picture.size == (256, 256)
            pixels = np.asarray(picture)
        assert np.array_equal(pixels, to_uint8(prepared.array[k]))
    # The window spreads soft tissue over the grey levels: not all black or white.
    assert len(np.unique(np.asarray(Image.open(paths[14])))) > 100


def test_jpeg_slices_are_close_and_named(prepared: Volume, tmp_path: Path) -> None:
    paths = write_slices(prepared, tmp_path, "jpeg")
    assert [p.name for p in paths[:2]] == ["slice-0001.jpg", "slice-0002.jpg"]
    assert len(paths) == 28
    with Image.open(paths[14]) as picture:
        assert (picture.format, picture.mode, picture.size) == ("JPEG", "L", (256, 256))
        error = np.abs(np.asarray(picture, np.int16) - to_uint8(prepared.array[14]))
    assert float(error.mean()) < 2.0  # lossy, at quality 95


def test_gif_is_one_animation_of_every_slice(prepared: Volume, tmp_path: Path) -> None:
    paths = write_slices(prepared, tmp_path, "gif")
    assert [p.name for p in paths] == ["slices.gif"]
    with Image.open(paths[0]) as animation:
        assert animation.size == (256, 256)
        frames = [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(animation)]
    assert len(frames) == 28
    for k in (0, 14, 27):
        assert np.array_equal(frames[k], to_uint8(prepared.array[k]))


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 0.499, 0.5, 1.0, 1.7], np.float32)
    assert to_uint8(values).tolist() == [0, 0, 0, 1, 127, 128, 255, 255]
    assert to_uint8(values).dtype == np.uint8
    with pytest.raises(ExportError, match="NaN"):
        to_uint8(np.array([np.nan]))


def test_a_channel_axis_is_refused(tmp_path: Path) -> None:
    geometry = Geometry(
        (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0)
    )
    stacked = Volume(np.zeros((2, 4, 4, 3), np.float32), geometry, (), "CT", "1")
    with pytest.raises(ExportError, match="channel axis"):
        write_slices(stacked, tmp_path / "out", "png")
    assert not (tmp_path / "out").exists()


def test_slice_names_sort_in_z_order() -> None:
    names = [slice_name(k, "png") for k in (0, 8, 9, 99, 998)]
    assert names == sorted(names)
    assert slice_name(0, "gif") == "slices.gif"
