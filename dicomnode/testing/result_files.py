"""A small CT series with a SEG and an SR over it, written as a pipeline writes them.

Tests of sending need results without running a model: the writers and ``save`` are
the ones pipelines use, so the files are stored as the outbox would find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.results import AlgorithmInfo, SegmentSpec, codes, save, write_seg, write_sr


@dataclass(frozen=True, slots=True)
class ResultFiles:
    ct: tuple[Path, ...]
    seg: Path
    sr: Path


def write_result_files(folder: Path, slices: int = 2, size: int = 32) -> ResultFiles:
    """A CT phantom in ``folder``/ct, and a SEG (one box segment) and an SR in ``folder``/out."""
    series = write_ct_phantom(folder / "ct", CTPhantomSpec(slices=slices, rows=size, columns=size))
    images = [pydicom.dcmread(p) for p in series.paths]
    labels = np.zeros((slices, size, size), dtype=np.uint8)
    labels[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    segments = (SegmentSpec(1, "Box", codes.TISSUE, codes.SOFT_TISSUE),)
    algorithm = AlgorithmInfo("box", "1.0")
    seg = write_seg(images, labels, segments, algorithm, series_number=101)
    if seg is None:
        raise AssertionError("the box label map made no SEG")
    sr = write_sr(images, seg, labels, segments, algorithm, series_number=102)
    return ResultFiles(series.paths, save(seg, folder / "out"), save(sr, folder / "out"))
