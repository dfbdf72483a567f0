"""The picture of a summary image: tiles with outlines, a table of values, a footer.

Pure drawing (numpy and Pillow), no DICOM: :mod:`~dicomnode.results.summary_image` decides
what goes in and wraps the pixels as a Secondary Capture. Every string drawn is recorded
in :attr:`Picture.texts`, so a test can show that no patient identifier was ever drawn.

Each present segment (up to :data:`MAX_TILES`, the largest) gets a tile of the slice where
it is largest, windowed for its modality, with the region's outline (the mask's inner
boundary, :data:`OUTLINE_WIDTH` pixels wide) in the segment's colour. A tile is the slice
scaled to fit its square, keeping the pixels' aspect; the mask is scaled by nearest
neighbour, tile pixel ``(i, j)`` showing source pixel ``(i * rows // height, j * columns
// width)``, and its outline is taken at tile resolution, so it is a closed line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

WIDTH: Final = 1024
MAX_TILES: Final = 4
OUTLINE_WIDTH: Final = 2
MARGIN: Final = 16
BACKGROUND: Final = (0, 0, 0)
TEXT: Final = (235, 235, 235)
DIM: Final = (160, 160, 160)
WARNING: Final = (200, 30, 30)
# Distinct colours for segments that name none (none of them grey, so an outline is
# never mistaken for image pixels).
PALETTE: Final = ((255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 230, 90), (230, 90, 230))

RGB = tuple[int, int, int]
Pixels = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Tile:
    """One region's slice: grey values (already windowed), its mask and how to label it."""

    label: int  # the segment's label
    caption: str  # e.g. "Bone, image 12"
    color: RGB
    grey: npt.NDArray[np.uint8]  # (rows, columns), 0..255
    mask: npt.NDArray[np.bool_]  # (rows, columns)
    aspect: float = 1.0  # row spacing / column spacing


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of cells under a header; a row may carry a colour (its segment's)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    colors: tuple[RGB | None, ...] = ()


@dataclass(frozen=True, slots=True)
class TileBox:
    """Where a tile's slice landed in the picture (top, left, height, width)."""

    label: int
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True, slots=True)
class Picture:
    pixels: Pixels  # (height, WIDTH, 3) RGB
    texts: tuple[str, ...]  # every string drawn, in order
    tiles: tuple[TileBox, ...] = field(default=())
    table_top: int = 0  # first row of the table


def window(values: npt.NDArray[Any], units: str) -> npt.NDArray[np.uint8]:
    """Grey values of one slice: CT soft tissue (W400/L40), PET inverted SUV 0..max."""
    data = np.asarray(values, dtype=np.float64)
    if units == "HU":
        low, high = 40.0 - 200.0, 40.0 + 200.0
    elif units.startswith("SUV"):
        low, high = 0.0, max(float(data.max()), 1e-6)
    else:
        low, high = (float(v) for v in np.percentile(data, (1.0, 99.0)))
    scaled = np.clip((data - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    grey = np.round(scaled).astype(np.uint8)
    return 255 - grey if units.startswith("SUV") else grey


def outline(mask: npt.NDArray[np.bool_], width: int = OUTLINE_WIDTH) -> npt.NDArray[np.bool_]:
    """The mask's pixels within ``width`` steps (4-neighbours) of a pixel outside it.

    The picture's edge counts as outside, so a region that touches it is closed there.
    """
    inner = np.asarray(mask, dtype=bool)
    for _ in range(width):
        shrunk = np.zeros_like(inner)
        shrunk[1:-1, 1:-1] = (
            inner[1:-1, 1:-1]
            & inner[:-2, 1:-1]
            & inner[2:, 1:-1]
            & inner[1:-1, :-2]
            & inner[1:-1, 2:]
        )
        inner = shrunk
    result: npt.NDArray[np.bool_] = np.asarray(mask, dtype=bool) & ~inner
    return result


def nearest(size: int, source: int) -> npt.NDArray[np.intp]:
    """For each of ``size`` output positions, the source index it shows."""
    indices: npt.NDArray[np.intp] = (np.arange(size, dtype=np.intp) * source) // size
    return indices


def draw(
    title: str,
    subtitle: str,
    tiles: Sequence[Tile],
    table: Table,
    footer: Sequence[str],
    *,
    banner: str | None = None,
    empty: str = "",
) -> Picture:
    """The whole picture: banner, title, tiles (or ``empty``), table, footer."""
    fonts = {size: ImageFont.load_default(size=size) for size in (14, 16, 20, 26)}
    texts: list[str] = []
    tiles = list(tiles)[:MAX_TILES]
    slot = min(512, (WIDTH - MARGIN * (len(tiles) + 1)) // max(len(tiles), 1))
    row_height = 26
    table_height = row_height * (len(table.rows) + 1)
    height = (
        MARGIN
        + (40 if banner else 0)
        + 34
        + 26
        + (slot + 28 if tiles else (36 if empty else 0))
        + MARGIN
        + table_height
        + MARGIN
        + 20 * len(footer)
        + MARGIN
    )
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    pen = ImageDraw.Draw(image)

    def text(xy: tuple[float, float], value: str, size: int, fill: RGB = TEXT) -> None:
        texts.append(value)
        pen.text(xy, value, font=fonts[size], fill=fill)

    y = MARGIN
    if banner:
        pen.rectangle((0, y - 4, WIDTH, y + 32), fill=WARNING)
        text((MARGIN, y), banner, 26, (255, 255, 255))
        y += 40
    text((MARGIN, y), title, 26)
    y += 34
    text((MARGIN, y), subtitle, 16, DIM)
    y += 26
    boxes: list[TileBox] = []
    if tiles:
        for index, tile in enumerate(tiles):
            left = MARGIN + index * (slot + MARGIN)
            box = _paste(image, tile, top=y, left=left, slot=slot)
            boxes.append(box)
            text((left, y + slot + 4), tile.caption, 16, tile.color)
        y += slot + 28
    elif empty:
        text((MARGIN, y + 6), empty, 20)
        y += 36
    y += MARGIN
    table_top = y
    _table(pen, table, y, row_height, fonts, texts)
    y += table_height + MARGIN
    for line in footer:
        text((MARGIN, y), line, 14, DIM)
        y += 20
    pixels: Pixels = np.asarray(image, dtype=np.uint8).copy()
    return Picture(pixels=pixels, texts=tuple(texts), tiles=tuple(boxes), table_top=table_top)


def _paste(image: Image.Image, tile: Tile, *, top: int, left: int, slot: int) -> TileBox:
    rows, columns = tile.grey.shape
    tall, wide = rows * tile.aspect, float(columns)
    scale = slot / max(tall, wide)
    height, width = max(1, round(tall * scale)), max(1, round(wide * scale))
    top += (slot - height) // 2
    left += (slot - width) // 2
    grey = Image.fromarray(tile.grey).resize((width, height), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=2)
    mask = tile.mask[nearest(height, rows)][:, nearest(width, columns)]
    rgb[outline(mask)] = tile.color
    image.paste(Image.fromarray(rgb), (left, top))
    return TileBox(tile.label, top, left, height, width)


def _table(
    pen: ImageDraw.ImageDraw,
    table: Table,
    top: int,
    row_height: int,
    fonts: dict[int, Any],
    texts: list[str],
) -> None:
    """Columns as wide as their widest cell (header in the larger font) plus a gap."""
    rows = [(table.header, TEXT), *zip(table.rows, _colors(table), strict=True)]
    widths = [0.0] * max(len(cells) for cells, _ in rows)
    for index, (cells, _) in enumerate(rows):
        for column, cell in enumerate(cells):
            length = float(fonts[20 if index == 0 else 16].getlength(cell))
            widths[column] = max(widths[column], length)
    lefts = [float(MARGIN)]
    for width in widths[:-1]:
        lefts.append(lefts[-1] + width + 32)
    pen.line((MARGIN, top + row_height - 3, WIDTH - MARGIN, top + row_height - 3), fill=DIM)
    for index, (cells, color) in enumerate(rows):
        y = top + index * row_height
        for x, cell in zip(lefts, cells, strict=False):
            texts.append(cell)
            pen.text((x, y), cell, font=fonts[20 if index == 0 else 16], fill=color)


def _colors(table: Table) -> list[RGB]:
    return [
        (table.colors[i] if i < len(table.colors) else None) or TEXT for i in range(len(table.rows))
    ]
