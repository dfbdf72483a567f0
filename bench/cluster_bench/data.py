"""The series every scenario receives, generated once: CT phantoms or copies of the real CT.

Each series is its own study and series (new UIDs), so one scenario's database never
sees the same UID twice; every scenario gets a fresh database, so the same files serve
them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cluster import copy_series
from ingest_bench.measure import DataSet

REAL_CT_FOLDER = "ct-head-phantom-philips"  # under DICOMNODE_TEST_DATA, as the tests read it


@dataclass(frozen=True, slots=True)
class Shape:
    """What to generate: ``series`` CT series of ``slices`` x ``size`` x ``size``."""

    series: int
    slices: int
    size: int
    real_ct: bool = False  # copies of the real CT instead of phantoms (its own geometry)

    @property
    def label(self) -> str:
        if self.real_ct:
            return f"{self.series} copies of the real CT ({REAL_CT_FOLDER})"
        return f"{self.series} CT phantom series of {self.slices} x {self.size}x{self.size}"


def generate(folder: Path, shape: Shape) -> list[DataSet]:
    """The series, one folder each; the real CT needs ``DICOMNODE_TEST_DATA``."""
    if shape.real_ct:
        return _real_ct_copies(folder, shape.series)
    series = []
    for seed in range(shape.series):
        spec = CTPhantomSpec(slices=shape.slices, rows=shape.size, columns=shape.size, seed=seed)
        paths = write_ct_phantom(folder / f"series-{seed + 1:03d}", spec).paths
        series.append(_data_set(paths[0].parent, list(paths), f"phantom seed {seed}"))
    return series


def _real_ct_copies(folder: Path, count: int) -> list[DataSet]:
    root = os.environ.get("DICOMNODE_TEST_DATA")
    source = Path(root) / REAL_CT_FOLDER if root else None
    if source is None or not source.is_dir():
        raise SystemExit(
            "--real-ct needs DICOMNODE_TEST_DATA (e.g. /work/shared/dicom) holding "
            f"{REAL_CT_FOLDER}/"
        )
    images = sorted(p for p in source.iterdir() if p.name.startswith("I"))
    return [
        _data_set(copy.folder, list(copy.paths), f"real CT copy {n + 1}")
        for n, copy in enumerate(copy_series(images, folder, count))
    ]


def _data_set(folder: Path, paths: list[Path], label: str) -> DataSet:
    return DataSet("ct", label, folder, len(paths), sum(p.stat().st_size for p in paths))
