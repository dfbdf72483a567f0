"""8-bit greyscale slices (PNG, JPEG, GIF) of a preprocessed volume, for 2-D models.

The one rule from voxels to bytes, :func:`to_uint8`: values in [0, 1] map to
round(v * 255) (to the nearest integer, ties to even, as ``numpy.rint``), anything outside
is clipped. That is the range a ``window`` step with
``output: unit`` and a ``normalize`` step with ``method: minmax`` (range 0..1, its default)
produce, so the steps of a pipeline decide what the grey levels mean, and a file's pixels
are exactly what the model would see, quantised to 256 levels. Other ranges (raw HU, SUV,
a z-score, a ``normalize`` range of 0..255) are clipped to black and white, not rescaled:
give the steps that bring the values to [0, 1].

File names are ``slice-0001.png`` ... (``.jpg`` for JPEG), numbered from 1 along z, so
slice ``slice-0001`` is z index 0: sorted by name they are in volume order. GIF is one
animated ``slices.gif``, a frame per slice, which is what a GIF of a series is for
(scrolling through it); per-slice GIFs would be PNGs in a worse format.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from dicomnode.datasets.atomic import write_atomically
from dicomnode.errors import ExportError
from dicomnode.volume import Volume

ImageFormat = Literal["png", "jpeg", "gif"]
GIF_NAME: Final = "slices.gif"
JPEG_QUALITY: Final = 95  # visually lossless for greyscale; JPEG is lossy whatever is chosen
GIF_FRAME_MS: Final = 100  # ten slices a second when the GIF plays
_SUFFIXES: Final[dict[str, str]] = {"png": ".png", "jpeg": ".jpg"}
_PIL_FORMATS: Final[dict[str, str]] = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF"}


def to_uint8(array: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Values in [0, 1] as 0..255: rint(v * 255), clipped; NaN is refused."""
    values = np.asarray(array, dtype=np.float64)
    if np.isnan(values).any():
        raise ExportError("the values hold NaN, which has no grey level")
    scaled = np.rint(values * 255.0)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def slice_name(index: int, fmt: ImageFormat) -> str:
    """The file name of z index ``index`` (0-based): ``slice-0001.png`` for index 0."""
    if fmt == "gif":
        return GIF_NAME
    return f"slice-{index + 1:04d}{_SUFFIXES[fmt]}"


def write_slices(volume: Volume, folder: Path, fmt: ImageFormat) -> list[Path]:
    """Write the volume's slices into ``folder`` (made if absent); the paths in z order.

    PNG and JPEG: a file per z index; GIF: one animated file (see the module docstring).
    Every file is written under a temporary name and renamed, so a file under its final
    name is complete.
    """
    if fmt not in _PIL_FORMATS:
        raise ExportError(f"unknown image format {fmt!r}; formats: png, jpeg, gif")
    array = volume.array
    if array.ndim != 3:
        raise ExportError(
            f"the volume has {array.ndim} axes (a channel axis from a stack step?): "
            "8-bit greyscale slices need one value per pixel; write it as NIfTI instead"
        )
    if array.shape[0] == 0:
        raise ExportError("the volume has no slices")
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "gif":
        return [_write_gif(array, folder / GIF_NAME)]
    paths: list[Path] = []
    for index in range(array.shape[0]):
        path = folder / slice_name(index, fmt)
        picture = Image.fromarray(to_uint8(array[index]))  # 2-D uint8: mode L
        write_atomically(path, partial(_save, picture, fmt))
        paths.append(path)
    return paths


def _save(picture: Image.Image, fmt: ImageFormat, path: Path) -> None:
    if fmt == "jpeg":
        picture.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(path, format=_PIL_FORMATS[fmt])


def _write_gif(array: npt.NDArray[np.float32], path: Path) -> Path:
    frames = [Image.fromarray(to_uint8(plane)) for plane in array]
    write_atomically(
        path,
        lambda temporary: frames[0].save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=GIF_FRAME_MS,
            loop=0,
        ),
    )
    return path
