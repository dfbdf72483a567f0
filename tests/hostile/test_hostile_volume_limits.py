"""Pipelines do not trust headers: a volume's size is checked before anything is allocated.

Measured on e23735d: Rows = Columns = 65535 in a received header made the loader try to
allocate 48 GiB.
"""

from __future__ import annotations

import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomnode.config import PipelineLimits
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import VolumeError
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.loading import load_series
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

HUGE = 65535  # the largest US value (PS3.5 6.2): what a hostile header can claim


def huge_header_series(folder: Path) -> list[Path]:
    """A small phantom whose headers claim 65535 x 65535 pixels (the pixel data stays small)."""
    series = write_ct_phantom(folder, CTPhantomSpec(slices=3, rows=16, columns=16))
    for path in series.paths:
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = HUGE
        ds.save_as(path, enforce_file_format=True)
    return list(series.paths)


def test_the_loader_refuses_a_65535_square_header_before_allocating(tmp_path: Path) -> None:
    paths = huge_header_series(tmp_path / "huge")
    tracemalloc.start()
    try:
        with pytest.raises(VolumeError, match="too large") as refused:
            load_series(paths)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "65535 x 65535" in str(refused.value)
    assert "pipeline_limits" in str(refused.value)
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB traced while refusing"


@pytest.mark.parametrize(
    ("limits", "what"),
    [(PipelineLimits(max_voxels=1000), "1,000 voxels"), (PipelineLimits(max_bytes=4000), "GiB")],
)
def test_either_limit_refuses_a_series_over_it(
    tmp_path: Path, limits: PipelineLimits, what: str
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=4, rows=16, columns=16))
    with pytest.raises(VolumeError, match="too large") as refused:
        load_series(series.paths, limits=limits)
    assert "1,024 voxels" in str(refused.value) and what in str(refused.value)
    # The same series within the limits loads.
    assert load_series(series.paths).volume.array.shape == (4, 16, 16)


def test_a_65535_square_series_fails_its_job_with_the_reason_and_the_node_goes_on(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        textwrap.dedent("- {name: ai, match: {Modality: CT}, pipeline: bone}\n")
    )
    node = node_factory(
        models={
            "threshold": {
                "kind": "python",
                "function": "dicomnode.testing.models:slow_threshold",
                "options": {"seconds": 0.0},
            }
        },
        pipelines={"bone": bone_pipeline("threshold")},
    )
    _send(huge_header_series(tmp_path / "huge"), node.scp.port)
    poll_until(
        lambda: [j.state for j in node.workers.queue.list_jobs()] == ["failed"],
        timeout=90,
        what="the job to fail",
    )
    (job,) = node.workers.queue.list_jobs()
    assert job.error is not None and "too large" in job.error and "65535" in job.error
    assert job.attempts == 1 and job.next_attempt_at is None  # a retry cannot help
    # A sane series after it runs to done.
    sane = write_ct_phantom(tmp_path / "sane", CTPhantomSpec(slices=4, rows=32, columns=32, seed=3))
    _send(list(sane.paths), node.scp.port)
    poll_until(
        lambda: sorted(j.state for j in node.workers.queue.list_jobs()) == ["done", "failed"],
        timeout=120,
        what="the sane series' job done",
    )


def _send(paths: list[Path], port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]
