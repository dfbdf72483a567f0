"""Test helper: which pixels a closed SCOORD polygon encloses."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt


def filled(points: npt.NDArray[np.floating], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The pixels whose centres the closed polygon (column, row) encloses, even-odd rule."""
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    x, y = columns + 0.5, rows + 0.5
    inside = np.zeros(shape, dtype=bool)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside
