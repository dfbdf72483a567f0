"""Many small CT instances in one study, for ingest benchmarks that count instances.

Each instance is a real, valid CT slice of the same phantom at a coarse matrix (16 x 16 by
default, about 2 KB a file), so what a benchmark measures is the per-instance cost of the
node, not the bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from dicomnode.phantom.ct import CTPhantomSpec, write_ct_phantom
from dicomnode.phantom.uids import derive_uid

_MAX_SERIES: Final = 5
_FIELD_OF_VIEW_MM: Final = 400.0  # wide enough for the 340 mm body at any matrix
_SLICE_THICKNESS_MM: Final = 5.0


def write_small_instances(
    out_dir: Path, count: int, *, seed: int = 0, rows: int = 16, columns: int = 16
) -> tuple[Path, ...]:
    """Write ``count`` instances as ``ct_0001.dcm``..., spread over up to five series."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    series_count = min(count, _MAX_SERIES)
    study_uid = derive_uid("small-study", str(seed))
    paths: list[Path] = []
    for number in range(1, series_count + 1):
        spec = CTPhantomSpec(
            slices=count // series_count + (number <= count % series_count),
            rows=rows,
            columns=columns,
            pixel_spacing_mm=_FIELD_OF_VIEW_MM / max(rows, columns),
            slice_thickness_mm=_SLICE_THICKNESS_MM,
            seed=seed,
            series_description=f"PHANTOM SMALL {number}",
            patient_id="PHANTOM-SMALL",
            series_number=number,
        )
        series = write_ct_phantom(
            out_dir, spec, study_instance_uid=study_uid, first_file_number=len(paths) + 1
        )
        paths.extend(series.paths)
    return tuple(paths)
