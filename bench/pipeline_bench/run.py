"""Command-line options, the tables and the targets of ``bench/pipeline``.

Figures are shown per series position in the node's life: series 1 is the node's first
job since start (cold), series 2 and later meet a warm node. With ``--repeat`` each
position shows the median over the repeats (each repeat a fresh node).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from ingest_bench import hotspots
from ingest_bench.machine import describe, git_revision, machine_table
from ingest_bench.measure import DataSet
from pipeline_bench import stagememory
from pipeline_bench.scenario import PIPELINE, PipelineRun, pipeline_run

MIB = 2**20
TARGET_S = 6.0  # issue 4: everything except inference under 6 s
TARGET_RSS_BYTES = 2 * 2**30  # issue 4: peak RSS under 2 GB (read as GiB, the kinder one)

Value = Callable[[PipelineRun], float]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pipeline",
        description=f"Synthetic CT series through the node's {PIPELINE} pipeline: the "
        "time of each stage, the sends of the SEG and SR, peak RSS, end-to-end latency.",
    )
    parser.add_argument("--slices", type=_positive, default=300, help="CT slices (512x512)")
    parser.add_argument(
        "--series",
        type=_positive,
        default=2,
        help="series sent one after another into the same node (default 2: the first "
        "job after start, then a warm one)",
    )
    parser.add_argument("--repeat", type=_positive, default=1, help="fresh nodes; median")
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="the node's completion.settle_seconds (default 2.0, the node's own default)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="afterwards, one more (untimed) run with py-spy attached to the node from the "
        "end of the first ingest to the last results' delivery; folded stacks in DIR",
    )
    parser.add_argument("--profile-view", choices=("active", "gil", "both"), default="active")
    parser.add_argument(
        "--stage-memory",
        action="store_true",
        help="afterwards, run the pipeline once more inside this process and print what "
        "each stage added to the peak RSS (see pipeline_bench/stagememory.py)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every sample here")
    parser.add_argument("--note", default="", help="a line to print and keep with the figures")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--workdir-parent", type=Path, default=None)
    parser.add_argument("--timeout", type=_positive, default=900, help="seconds per step")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    parent = options.workdir_parent or Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="dicomnode-bench-pipeline-", dir=parent))
    started = datetime.now(UTC)
    runs: list[PipelineRun] = []
    try:
        machine = describe(workdir)
        console.print(machine_table(machine, started, options.note))
        series = _generate(console, workdir / "data", options.slices, options.series)
        for rep in range(1, options.repeat + 1):
            for run in pipeline_run(
                series,
                workdir / "runs" / f"{rep:02d}",
                settle_s=options.settle,
                timeout_s=options.timeout,
            ):
                runs.append(run)
                console.print(
                    f"run {rep}/{options.repeat}, series {run.position}: job {run.job_state} "
                    f"in {run.job_s:.2f} s, last image in -> SEG and SR at storescp "
                    f"{run.end_to_end_s:.2f} s, received {', '.join(run.received)}, "
                    f"node peak RSS so far {run.node_peak_rss_bytes / MIB:.0f} MiB"
                )
        console.print()
        positions = sorted({r.position for r in runs})
        console.print(_stages_table(runs, positions))
        console.print(_latency_table(runs, positions, options.settle))
        console.print(_targets_table(runs, positions))
        console.print(_regions_table(runs[-1]))
        if options.json is not None:  # before profiling: the timed figures are kept first
            document = {
                "date": started.isoformat(timespec="seconds"),
                "note": options.note,
                "argv": sys.argv[1:],
                "machine": asdict(machine),
                "series": [{**asdict(d), "folder": str(d.folder)} for d in series],
                "settle_seconds": options.settle,
                "runs": [asdict(r) for r in runs],
            }
            options.json.write_text(json.dumps(document, indent=2) + "\n")
            console.print(f"samples written to {options.json}")
        if options.profile is not None:
            _profile(console, workdir, series, options)
        if options.stage_memory:
            loaded_rss, rows = stagememory.measure(
                [p for p in sorted(series[0].folder.iterdir()) if p.is_file()], PIPELINE
            )
            console.print(stagememory.stage_memory_table(loaded_rss, rows))
        revision_after = git_revision()
        if revision_after not in machine.dicomnode:
            console.print(
                f"[red]WARNING[/red] dicomnode changed during the run: {machine.dicomnode} "
                f"-> {revision_after}"
            )
    finally:
        if options.keep:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [r for r in runs if not r.ok]
    for run in failed:
        console.print(
            f"[red]FAILED[/red] series {run.position}: job {run.job_state} {run.job_error}; "
            f"storescu exit {run.sender_rc}; storescp received "
            f"{', '.join(run.received) or 'nothing'}"
        )
    return 1 if failed else 0


def _generate(console: Console, folder: Path, slices: int, count: int) -> list[DataSet]:
    """``count`` phantoms, each its own study and series (the seed sets the UIDs)."""
    start = time.perf_counter()
    series = []
    for seed in range(count):
        spec = CTPhantomSpec(slices=slices, rows=512, columns=512, seed=seed)
        paths = write_ct_phantom(folder / f"series-{seed + 1}", spec).paths
        size = sum(p.stat().st_size for p in paths)
        label = f"CT series {slices} x 512x512 (seed {seed})"
        series.append(DataSet("ct", label, paths[0].parent, len(paths), size))
    console.print(
        f"generated {count} x CT series {slices} x 512x512: {series[0].count} files, "
        f"{series[0].size_bytes / 1e6:.1f} MB each, in {time.perf_counter() - start:.1f} s "
        "(not part of any timing)"
    )
    return series


def _heading(position: int) -> str:
    return "series 1 (cold) s" if position == 1 else f"series {position} (warm) s"


def _at(runs: Sequence[PipelineRun], position: int, value: Value) -> float:
    return statistics.median(value(r) for r in runs if r.position == position)


def _row(
    runs: Sequence[PipelineRun], positions: Sequence[int], value: Value, digits: int = 2
) -> list[str]:
    return [f"{_at(runs, p, value):.{digits}f}" for p in positions]


def _table(title: str, first: str, positions: Sequence[int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(first)
    for position in positions:
        table.add_column(_heading(position), justify="right")
    return table


def _stage(run: PipelineRun, name: str) -> float:
    return run.stage(name)


def _send_seconds(run: PipelineRun, number: int) -> float:
    return run.sends[number].seconds if number < len(run.sends) else 0.0


def _stages_table(runs: Sequence[PipelineRun], positions: Sequence[int]) -> Table:
    repeats = sum(r.position == 1 for r in runs)
    table = _table(
        f"the job's stages (its timeline in the node's database), median of {repeats}",
        "stage",
        positions,
    )
    for name, _ in runs[0].stages:
        table.add_row(name, *_row(runs, positions, partial(_stage, name=name)))
    table.add_row("(between stages: untimed work)", *_row(runs, positions, _between))
    table.add_row("[bold]job total[/bold]", *_row(runs, positions, _job_s))
    for number, send in enumerate(runs[0].sends):
        table.add_row(
            f"send {send.modality} ({send.instances} instance) to storescp",
            *_row(runs, positions, partial(_send_seconds, number=number)),
        )
    return table


def _between(run: PipelineRun) -> float:
    return run.between_stages_s


def _job_s(run: PipelineRun) -> float:
    return run.job_s


def _latency_table(runs: Sequence[PipelineRun], positions: Sequence[int], settle: float) -> Table:
    table = _table(
        "end to end: the last image acknowledged -> SEG and SR acknowledged by storescp "
        "(the node's log events, storescp's file times)",
        "part",
        positions,
    )
    parts: list[tuple[str, Value]] = [
        (f"storescu exit -> series_completed (settle_seconds={settle:g})", lambda r: r.settle_s),
        ("series_completed -> series_routed", lambda r: r.route_s),
        ("series_routed -> job_started", lambda r: r.pickup_s),
        ("job_started -> job_done", lambda r: r.job_wall_s),
        ("job_done -> first result send started", lambda r: r.send_wait_s),
        ("first result send started -> last send_delivered", lambda r: r.sends_wall_s),
        ("[bold]end to end (last image in -> later of SEG, SR at storescp)[/bold]",
         lambda r: r.end_to_end_s),
        ("  SEG at storescp", lambda r: r.seg_at_s),
        ("  SR at storescp", lambda r: r.sr_at_s),
        ("ingest: storescu into the node, exec to exit", lambda r: r.ingest_wall_s),
        ("node CPU s, storescu exit -> last send_delivered", lambda r: r.node_cpu_s),
        ("node start (exec -> listening, TensorFlow model loaded)", lambda r: r.node_start_s),
        ("node RSS MiB once listening (model loaded)", lambda r: r.idle_rss_bytes / MIB),
        ("node peak RSS MiB since start", lambda r: r.node_peak_rss_bytes / MIB),
    ]  # fmt: skip
    for label, value in parts:
        table.add_row(label, *_row(runs, positions, value, 0 if "MiB" in label else 2))
    return table


def _targets_table(runs: Sequence[PipelineRun], positions: Sequence[int]) -> Table:
    table = _table("against the targets of issue 4", "measure", positions)
    table.add_column("target", justify="right")
    checks: list[tuple[str, Value, float, str]] = [
        ("job except inference, plus the result sends (s)",
         lambda r: r.job_s - r.stage("inference") + r.send_s, TARGET_S, "s"),
        ("end to end less inference (s)",
         lambda r: r.end_to_end_s - r.stage("inference"), TARGET_S, "s"),
        ("end to end less inference and the settle wait (s)",
         lambda r: r.end_to_end_s - r.stage("inference") - r.settle_s, TARGET_S, "s"),
        ("node peak RSS since start (MiB)",
         lambda r: r.node_peak_rss_bytes / MIB, TARGET_RSS_BYTES / MIB, "MiB"),
    ]  # fmt: skip
    for label, value, target, unit in checks:
        cells = []
        for position in positions:
            measured = _at(runs, position, value)
            shown = f"{measured:.0f}" if unit == "MiB" else f"{measured:.2f}"
            verdict = "[green]met[/green]" if measured < target else "[red]NOT MET[/red]"
            cells.append(f"{shown} {verdict}")
        table.add_row(label, *cells, f"< {target:g} {unit}")
    table.add_row(
        "inference (s), for reference",
        *_row(runs, positions, partial(_stage, name="inference")),
        "",
    )
    return table


def _regions_table(run: PipelineRun) -> Table:
    table = Table(title="what the last job measured", title_justify="left")
    for header in ("region", "volume ml", "mean", "max"):
        table.add_column(header, justify="left" if header == "region" else "right")
    for region in run.summary.get("regions", []):
        table.add_row(
            str(region.get("name")),
            f"{region.get('volume_ml', 0):.1f}",
            f"{region.get('mean', 0):.1f}",
            f"{region.get('max', 0):.1f}",
        )
    return table


def _profile(
    console: Console, workdir: Path, series: Sequence[DataSet], options: argparse.Namespace
) -> None:
    """Untimed runs with py-spy attached after the first ingest: one per view."""
    out_dir: Path = options.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    views = ("active", "gil") if options.profile_view == "both" else (options.profile_view,)
    for view in views:
        folded = out_dir / f"pipeline-{view}.folded"
        runs = pipeline_run(
            series,
            workdir / "runs" / f"profile-{view}",
            settle_s=max(options.settle, 2.0),  # py-spy attaches within the settle wait
            timeout_s=options.timeout,
            profiler=hotspots.Attacher(folded, gil=view == "gil", warm_up_s=0),
        )
        jobs = ", ".join(f"{r.job_s:.2f}" for r in runs)
        console.print(
            f"profiled pipeline runs ({view} view): jobs {jobs} s under py-spy (slower "
            f"than unprofiled); folded stacks in {folded}"
        )
        profile = hotspots.summarise(folded, top=25)
        title = f"node pipeline jobs, {view} view"
        console.print(hotspots.hotspot_table(title, profile, by_total=False))
        console.print(hotspots.hotspot_table(title, profile, by_total=True))
        console.print(hotspots.package_table(title, profile))
