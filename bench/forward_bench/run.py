"""Command-line options and the order of the runs of ``bench/forward``.

Per repeat, the baseline (storescu -> storescp) and the node's forward run back to back,
so that a neighbour's load on the shared machine falls on both; medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from forward_bench.scenario import Baseline, Forward, baseline, node_forward
from ingest_bench import hotspots
from ingest_bench.machine import describe, git_revision, machine_table
from ingest_bench.measure import DataSet

MIB = 2**20
TARGET_RATIO = 2.0  # issue 3: the node's forwarding within 2x of storescu's wall time


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/forward",
        description="Time the node forwarding a synthetic CT series to DCMTK storescp, "
        "beside DCMTK storescu sending the same files to a storescp.",
    )
    parser.add_argument("--slices", type=_positive, default=300, help="CT slices (512x512)")
    parser.add_argument("--repeat", type=_positive, default=1, help="runs of each; median")
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
        help="afterwards, one more (untimed) node run with py-spy attached from the end "
        "of the ingest to the delivery; folded stacks in DIR, hot spots printed",
    )
    parser.add_argument("--profile-view", choices=("active", "gil", "both"), default="both")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every sample here")
    parser.add_argument("--note", default="", help="a line to print and keep with the figures")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--workdir-parent", type=Path, default=None)
    parser.add_argument("--timeout", type=_positive, default=600, help="seconds per step")
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
    workdir = Path(tempfile.mkdtemp(prefix="dicomnode-bench-forward-", dir=parent))
    started = datetime.now(UTC)
    baselines: list[Baseline] = []
    forwards: list[Forward] = []
    try:
        machine = describe(workdir)
        console.print(machine_table(machine, started, options.note))
        data = _generate(console, workdir / "data", options.slices)
        for rep in range(1, options.repeat + 1):
            base = baseline(
                data, workdir / "runs" / f"{rep:02d}-storescu", timeout_s=options.timeout
            )
            baselines.append(base)
            console.print(
                f"run {rep}/{options.repeat} storescu -> storescp: {base.wall_s:6.2f} s  "
                f"received {base.received}/{base.expected}"
            )
            fwd = node_forward(
                data,
                workdir / "runs" / f"{rep:02d}-node",
                settle_s=options.settle,
                timeout_s=options.timeout,
            )
            forwards.append(fwd)
            console.print(
                f"run {rep}/{options.repeat} node -> storescp: send {fwd.send_s:6.2f} s, "
                f"last ack in -> last file out {fwd.wall_s:6.2f} s  received "
                f"{fwd.received}/{fwd.expected}"
            )
        console.print()
        console.print(_results_table(data, baselines, forwards))
        console.print(_verdict(baselines, forwards))
        console.print(_split_table(forwards, options.settle))
        if options.profile is not None:
            _profile(console, workdir, data, options)
        revision_after = git_revision()
        if revision_after not in machine.dicomnode:
            console.print(
                f"[red]WARNING[/red] dicomnode changed during the run: {machine.dicomnode} "
                f"-> {revision_after}"
            )
        if options.json is not None:
            document = {
                "date": started.isoformat(timespec="seconds"),
                "note": options.note,
                "argv": sys.argv[1:],
                "machine": asdict(machine),
                "dataset": {**asdict(data), "folder": str(data.folder)},
                "settle_seconds": options.settle,
                "baselines": [asdict(b) for b in baselines],
                "forwards": [asdict(f) for f in forwards],
            }
            options.json.write_text(json.dumps(document, indent=2) + "\n")
            console.print(f"samples written to {options.json}")
    finally:
        if options.keep:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [*(b for b in baselines if not b.ok), *(f for f in forwards if not f.ok)]
    for sample in failed:
        console.print(f"[red]FAILED[/red] {sample}")
    return 1 if failed else 0


def _generate(console: Console, folder: Path, slices: int) -> DataSet:
    start = time.perf_counter()
    paths = write_ct_phantom(folder, CTPhantomSpec(slices=slices, rows=512, columns=512)).paths
    size = sum(p.stat().st_size for p in paths)
    label = f"CT series {slices} x 512x512"
    console.print(
        f"generated {label}: {len(paths)} files, {size / 1e6:.1f} MB in "
        f"{time.perf_counter() - start:.1f} s (not part of any timing)"
    )
    return DataSet("ct", label, folder, len(paths), size)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _results_table(data: DataSet, baselines: list[Baseline], forwards: list[Forward]) -> Table:
    base = _median([b.wall_s for b in baselines])
    send = _median([f.send_s for f in forwards])
    wall = _median([f.wall_s for f in forwards])
    table = Table(
        title=f"{data.label}, {data.size_bytes / 1e6:.1f} MB, to DCMTK storescp "
        f"(TCP_NODELAY=1); median of {len(baselines)}",
        title_justify="left",
    )
    for header in ("sender", "what is timed", "s (median)", "min-max", "MB/s", "/ storescu"):
        table.add_column(
            header, justify="left" if header in {"sender", "what is timed"} else "right"
        )
    rows = [
        ("DCMTK storescu", "exec to exit", [b.wall_s for b in baselines], base),
        ("node outbox", "its send (log: send_delivered seconds)",
         [f.send_s for f in forwards], send),
        ("node, end to end", "last image acked in -> last file at storescp",
         [f.wall_s for f in forwards], wall),
    ]  # fmt: skip
    for sender, what, values, median in rows:
        ratio = median / base
        colour = "green" if ratio <= TARGET_RATIO else "red"
        table.add_row(
            sender,
            what,
            f"{median:.2f}",
            _range(values),
            f"{data.size_bytes / 1e6 / median:.1f}",
            f"[{colour}]{ratio:.2f}[/{colour}]",
        )
    table.caption = (
        f"target: the node's forwarding within {TARGET_RATIO:.0f}x of storescu's wall time "
        "(ratio <= 2; > 1 means the node is slower)"
    )
    table.caption_justify = "left"
    return table


def _verdict(baselines: list[Baseline], forwards: list[Forward]) -> str:
    ratio = _median([f.send_s for f in forwards]) / _median([b.wall_s for b in baselines])
    met = "[green]met[/green]" if ratio <= TARGET_RATIO else "[red]NOT MET[/red]"
    return f"node send / storescu wall = {ratio:.2f} (medians): target <= {TARGET_RATIO:g}x {met}"


def _split_table(forwards: list[Forward], settle: float) -> Table:
    table = Table(
        title="node, where the end-to-end seconds go (median; from the node's log events)",
        title_justify="left",
    )
    table.add_column("part")
    table.add_column("s", justify="right")
    parts = [
        (f"storescu exit -> series_completed (completion settle_seconds={settle:g})",
         [f.settle_s for f in forwards]),
        ("series_completed -> series_routed", [f.route_s for f in forwards]),
        ("series_routed -> send started (outbox pickup)", [f.pickup_s for f in forwards]),
        ("send (claim -> last acknowledgement recorded)", [f.send_s for f in forwards]),
        ("send_delivered logged -> last file's mtime", [f.tail_s for f in forwards]),
        ("ingest: storescu into the node, exec to exit", [f.ingest_wall_s for f in forwards]),
        ("node CPU s, storescu exit -> send_delivered", [f.node_cpu_s for f in forwards]),
    ]  # fmt: skip
    for label, values in parts:
        table.add_row(label, f"{_median(values):.3f}")
    peak = _median([f.node_peak_rss_bytes for f in forwards]) / MIB
    table.add_row("node peak RSS MiB (ingest and forward)", f"{peak:.0f}")
    return table


def _profile(console: Console, workdir: Path, data: DataSet, options: argparse.Namespace) -> None:
    """Untimed node runs with py-spy attached after the ingest: one per view."""
    out_dir: Path = options.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    views = ("active", "gil") if options.profile_view == "both" else (options.profile_view,)
    for view in views:
        folded = out_dir / f"forward-{view}.folded"
        fwd = _profiled_forward(
            data, workdir / "runs" / f"profile-{view}", folded, options, gil=view == "gil"
        )
        console.print(
            f"profiled node forward ({view} view): send {fwd.send_s:.2f} s under py-spy "
            f"(slower than unprofiled); folded stacks in {folded}"
        )
        profile = hotspots.summarise(folded)
        title = f"node forward, {view} view"
        console.print(hotspots.hotspot_table(title, profile, by_total=False))
        console.print(hotspots.hotspot_table(title, profile, by_total=True))
        console.print(hotspots.package_table(title, profile))


def _profiled_forward(
    data: DataSet, run_dir: Path, folded: Path, options: argparse.Namespace, *, gil: bool
) -> Forward:
    return node_forward(
        data,
        run_dir,
        settle_s=max(options.settle, 2.0),  # py-spy attaches within the settle wait
        timeout_s=options.timeout,
        profiler=hotspots.Attacher(folded, gil=gil, warm_up_s=0),
    )
