"""The outline of a region on one slice: exact on pixel edges, bounded, never a 'rectangle'."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from polygons import filled

from dicomnode.errors import ResultError
from dicomnode.results.contour import outline


def check(points: npt.NDArray[np.float32]) -> None:
    assert points[0].tolist() == points[-1].tolist()  # closed
    assert len(points) not in (4, 5)  # OHIF would take it for a RectangleROI
    assert len(points) <= 256


def test_an_l_shape_is_outlined_exactly_by_its_corners() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:6, 2:4] = True
    mask[4:6, 4:7] = True
    points = outline(mask)
    check(points)
    assert len(points) == 7  # six corners, closed
    assert {tuple(p) for p in points.tolist()} == {
        (2.0, 1.0),
        (4.0, 1.0),
        (4.0, 4.0),
        (7.0, 4.0),
        (7.0, 6.0),
        (2.0, 6.0),
    }
    np.testing.assert_array_equal(filled(points, mask.shape), mask)


@pytest.mark.parametrize("box", [(slice(3, 4), slice(5, 6)), (slice(1, 4), slice(2, 6))])
def test_a_rectangle_gets_midpoints_so_ohif_does_not_hydrate_it(box: tuple[slice, slice]) -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[box] = True
    points = outline(mask)
    check(points)
    assert len(points) == 9
    np.testing.assert_array_equal(filled(points, mask.shape), mask)


def test_of_several_blobs_the_largest_is_outlined() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:3, 1:3] = True
    mask[5:11, 4:10] = True
    mask[5:7, 4:6] = False  # not a rectangle
    points = outline(mask)
    check(points)
    largest = mask.copy()
    largest[:4] = False
    np.testing.assert_array_equal(filled(points, mask.shape), largest)


def test_a_hole_is_inside_the_outline() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:9, 1:8] = True
    mask[4:6, 3:5] = False
    points = outline(mask)
    check(points)
    solid = mask.copy()
    solid[4:6, 3:5] = True
    np.testing.assert_array_equal(filled(points, mask.shape), solid)


def test_pixels_that_touch_at_a_corner_are_one_blob() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:3, 1:3] = True
    mask[3, 3] = True
    points = outline(mask)
    check(points)
    assert (4.0, 4.0) in {tuple(p) for p in points.tolist()}  # the corner pixel is in it


def test_a_ragged_region_is_simplified_to_the_point_bound() -> None:
    rows, columns = np.mgrid[:512, :512]
    disk = (rows - 256) ** 2 + (columns - 240) ** 2 < 180**2
    noise = np.random.default_rng(7).random(disk.shape) < 0.3
    ragged = disk & ~(noise & ((rows - 256) ** 2 + (columns - 240) ** 2 > 175**2))
    points = outline(ragged, max_points=64)
    assert len(points) <= 64
    check(points)
    covered = filled(points, ragged.shape)
    overlap = (covered & disk).sum() / (covered | disk).sum()
    assert overlap > 0.97


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((4, 4), dtype=bool), "at least one pixel"),
        (np.ones((2, 4, 4), dtype=bool), "2-D mask"),
    ],
)
def test_what_cannot_be_outlined_is_refused(mask: npt.NDArray[np.bool_], message: str) -> None:
    with pytest.raises(ResultError, match=message):
        outline(mask)
