"""Memory and time of each pipeline stage, measured inside one process (``--stage-memory``).

The node's own figures give only its peak RSS since start. To say which stage makes the
peak, this runs the same engine here, in the benchmark's process, on one series: before
each stage the kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` = 5, Linux 4.0+)
and after it ``VmHWM`` is read, so "peak - before" is what the stage added at its worst.

It wraps two private names of ``dicomnode.pipeline.engine`` (``_timed``, the stage timer,
and ``region_stats``, which runs between the timed stages); if the engine changes they may
go, and this says so instead of measuring something else. Not part of the node's timings.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MIB = 2**20


@dataclass(frozen=True, slots=True)
class StageMemory:
    stage: str
    seconds: float
    rss_before_bytes: int
    peak_bytes: int
    rss_after_bytes: int


def _status(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in {_STATUS}")


class _Meter:
    def __init__(self) -> None:
        self.rows: list[StageMemory] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before = _status("VmRSS")
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.rows.append(StageMemory(name, seconds, before, _status("VmHWM"), _status("VmRSS")))


def measure(paths: Sequence[Path], pipeline: str) -> tuple[int, list[StageMemory]]:
    """Load the pipeline's model, run it on ``paths``; (RSS with the model, the stages)."""
    from dicomnode.pipeline import worker
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.runners import ModelHost

    # Typed as Any: two private names are swapped below, on purpose.
    engine: Any = importlib.import_module("dicomnode.pipeline.engine")
    if not hasattr(engine, "_timed") or not hasattr(engine, "region_stats"):
        raise RuntimeError("dicomnode.pipeline.engine changed: --stage-memory needs updating")
    meter = _Meter()
    timed: Callable[[Any, str], AbstractContextManager[None]] = engine._timed
    stats = engine.region_stats

    @contextmanager
    def metered_timed(result: Any, stage: str) -> Iterator[None]:
        with meter.stage(stage), timed(result, stage):
            yield

    def metered_stats(*args: Any, **kwargs: Any) -> Any:
        with meter.stage("region_stats (between stages)"):
            return stats(*args, **kwargs)

    models, pipelines = all_definitions({}, {}, "bench")
    host = ModelHost(models, Path.cwd())
    host.runner(pipelines[pipeline].model).load()
    loaded_rss = _status("VmRSS")
    engine._timed = metered_timed
    engine.region_stats = metered_stats
    try:
        result = engine.PipelineEngine(pipelines, host).run(pipeline, list(paths))
        with meter.stage("encode results (store)"):
            for dataset in result.datasets:
                worker._encode(dataset)
    finally:
        engine._timed = timed
        engine.region_stats = stats
        host.close()
    return loaded_rss, meter.rows


def stage_memory_table(loaded_rss: int, rows: Sequence[StageMemory]) -> Table:
    table = Table(
        title=f"in-process, per stage (RSS with the model loaded: {loaded_rss / MIB:.0f} MiB)",
        title_justify="left",
    )
    for header in ("stage", "s", "RSS before MiB", "peak MiB", "peak - before MiB", "after MiB"):
        table.add_column(header, justify="left" if header == "stage" else "right")
    for row in rows:
        table.add_row(
            row.stage,
            f"{row.seconds:.2f}",
            f"{row.rss_before_bytes / MIB:.0f}",
            f"{row.peak_bytes / MIB:.0f}",
            f"{(row.peak_bytes - row.rss_before_bytes) / MIB:.0f}",
            f"{row.rss_after_bytes / MIB:.0f}",
        )
    return table
