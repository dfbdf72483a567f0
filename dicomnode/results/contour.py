"""The outline of a region on one slice, as a closed polygon in SCOORD pixel space.

The SR draws each finding at its region (:mod:`dicomnode.results.sr`), so it needs the
region's outline: a closed POLYLINE of (column, row) points with 0.0\\0.0 the top left
corner of the top left pixel (PS3.3 C.18.6.1.2). numpy alone does it (scikit-image's
marching squares is not a dependency): the boundary runs along pixel *edges*, so the
outline encloses whole pixels exactly, like the box it replaced.

1. Every edge between a region pixel and a background pixel becomes a directed edge,
   oriented so that the region lies on its right on screen (rows grow downwards).
2. The edges form closed loops: one per blob outline (clockwise, positive area) and one
   per hole (negative area). Where two pixels touch only at a corner, the trace turns
   left and joins them (8-connectivity), so every edge is used once.
3. The loop with the largest area is the largest blob's outer outline.
4. Collinear vertices go; then Douglas-Peucker simplifies until at most ``max_points``
   remain, with a tolerance that starts under a pixel and doubles.

OHIF 3 hydrates a POLYLINE of 4 or 5 points into its RectangleROI tool, which shows its
own statistics instead of the SR's (see the SR module), so an outline is never returned
with 4 or 5 points: a polygon of 3 or 4 vertices gets its edges' midpoints added.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ResultError

MAX_POINTS: Final = 256
_RECTANGLE_LIKE: Final = (4, 5)  # POLYLINE point counts OHIF takes for a rectangle
# Step per direction code, in (dx, dy): right, down, left, up.
_STEPS: Final = ((1, 0), (0, 1), (-1, 0), (0, -1))

Points = npt.NDArray[np.float32]  # (n, 2): column, row


def outline(mask: npt.NDArray[np.bool_], max_points: int = MAX_POINTS) -> Points:
    """The closed outline (first point repeated last) of the largest blob of ``mask``.

    ``mask`` is one slice (rows, columns). At most ``max_points`` points come back, and
    never 4 or 5 (see the module docstring).
    """
    if mask.ndim != 2:
        raise ResultError(f"an outline needs a 2-D mask, got shape {mask.shape}")
    if max_points < 9:
        raise ResultError(f"an outline needs room for 9 points, got {max_points}")
    if not mask.any():
        raise ResultError("an outline needs at least one pixel")
    loops = _loops(np.asarray(mask, dtype=bool))
    vertices = max(loops, key=_area)
    corners = _corners(vertices)
    simplified = _simplify(corners, max_points - 1)
    while len(simplified) + 1 in _RECTANGLE_LIKE or len(simplified) < 4:
        simplified = _with_midpoints(simplified)
    closed = np.vstack([simplified, simplified[:1]])
    return closed.astype(np.float32)


def _loops(mask: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.int64]]:
    """Every boundary loop of ``mask`` as (n, 2) integer vertices (x, y)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    width = mask.shape[1] + 1  # vertices per row
    starts: list[npt.NDArray[np.intp]] = []
    codes: list[npt.NDArray[np.intp]] = []
    # Edge start vertex (x, y) for each side of a region pixel (y, x) facing background.
    sides = (
        (padded[:-2, 1:-1], 0, 0, 0),  # top: (x, y) -> right
        (padded[1:-1, 2:], 1, 0, 1),  # right: (x+1, y) -> down
        (padded[2:, 1:-1], 1, 1, 2),  # bottom: (x+1, y+1) -> left
        (padded[1:-1, :-2], 0, 1, 3),  # left: (x, y+1) -> up
    )
    for neighbour, dx, dy, side in sides:
        ys, xs = np.nonzero(inner & ~neighbour)
        starts.append((ys + dy) * width + xs + dx)
        codes.append(np.full(ys.shape, side))
    start_vertices = np.concatenate(starts).tolist()
    start_codes = np.concatenate(codes).tolist()
    outgoing: dict[int, list[int]] = {}
    for v, c in zip(start_vertices, start_codes, strict=True):
        outgoing.setdefault(v, []).append(c)
    used: set[tuple[int, int]] = set()
    loops: list[npt.NDArray[np.int64]] = []
    for vertex, vertex_codes in outgoing.items():
        for c in vertex_codes:
            if (vertex, c) not in used:
                loops.append(_trace(outgoing, used, vertex, c, width))
    return loops


def _trace(
    outgoing: dict[int, list[int]],
    used: set[tuple[int, int]],
    vertex: int,
    code: int,
    width: int,
) -> npt.NDArray[np.int64]:
    """Follow the loop that starts with the edge (``vertex``, ``code``) back to it."""
    start = (vertex, code)
    trail: list[int] = []
    while True:
        used.add((vertex, code))
        trail.append(vertex)
        dx, dy = _STEPS[code]
        vertex += dy * width + dx
        options = outgoing[vertex]
        left = (code - 1) % 4  # a pinch offers left and right; left joins the pixels
        code = left if left in options else options[0]
        if (vertex, code) == start:
            break
    flat = np.asarray(trail, dtype=np.int64)
    return np.stack([flat % width, flat // width], axis=1)


def _area(vertices: npt.NDArray[np.int64]) -> float:
    """Signed area (shoelace): positive for a blob's outline, negative for a hole."""
    x, y = vertices[:, 0], vertices[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def _corners(vertices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The vertices where the outline turns (a pixel outline is all right angles)."""
    before = vertices - np.roll(vertices, 1, axis=0)
    after = np.roll(vertices, -1, axis=0) - vertices
    turns = np.any(before != after, axis=1)
    return vertices[turns].astype(np.float64)


def _simplify(points: npt.NDArray[np.float64], limit: int) -> npt.NDArray[np.float64]:
    """At most ``limit`` of the polygon's vertices, by Douglas-Peucker."""
    tolerance = 0.5
    kept = points
    while len(kept) > limit:
        kept = _douglas_peucker_closed(points, tolerance)
        tolerance *= 2
    return kept


def _douglas_peucker_closed(
    points: npt.NDArray[np.float64], tolerance: float
) -> npt.NDArray[np.float64]:
    """Douglas-Peucker on a closed polygon: split at the vertex farthest from the first."""
    far = int(np.argmax(np.hypot(*(points - points[0]).T)))
    if far == 0:
        return points[:1]
    first = _douglas_peucker(points[: far + 1], tolerance)
    second = _douglas_peucker(np.vstack([points[far:], points[:1]]), tolerance)
    return np.vstack([first[:-1], second[:-1]])


def _douglas_peucker(points: npt.NDArray[np.float64], tolerance: float) -> npt.NDArray[np.float64]:
    """The open polyline ``points`` simplified; its ends are kept."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        segment = points[b] - points[a]
        offsets = points[a + 1 : b] - points[a]
        length = float(np.hypot(*segment))
        if length == 0:
            distances = np.hypot(offsets[:, 0], offsets[:, 1])
        else:
            distances = np.abs(segment[0] * offsets[:, 1] - segment[1] * offsets[:, 0]) / length
        i = int(np.argmax(distances))
        if distances[i] > tolerance:
            keep[a + 1 + i] = True
            stack.extend(((a, a + 1 + i), (a + 1 + i, b)))
    return points[keep]


def _with_midpoints(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each vertex followed by the midpoint of its edge to the next."""
    middles = (points + np.roll(points, -1, axis=0)) / 2
    return np.stack([points, middles], axis=1).reshape(-1, 2)
