"""Options and the order of the runs: data once, then every receiver fresh, one at a time.

Runs are interleaved (for each repeat, every receiver in turn) so that a slow drift of
the machine, such as a neighbour on the same host, spreads over all receivers instead of
landing on one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom, write_small_instances
from ingest_bench import hotspots
from ingest_bench.machine import Machine, describe, git_revision, machine_table
from ingest_bench.measure import DataSet, Sample, run_once
from ingest_bench.receivers import DURABILITY, RECEIVERS
from ingest_bench.report import Summary, print_tables, sender_label, summarise
from ingest_bench.tls import BenchTLS

DATASETS = ("ct", "small")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest",
        description="Send the same files with DCMTK storescu to dicomnode, DCMTK storescp "
        "and Orthanc, one after another, each started fresh; compare time and memory.",
    )
    parser.add_argument("--slices", type=_positive, default=300, help="CT slices (512x512)")
    parser.add_argument("--small-count", type=_positive, default=2000, help="small instances")
    parser.add_argument("--repeat", type=_positive, default=1, help="runs per receiver; median")
    parser.add_argument(
        "--only",
        type=_names(list(RECEIVERS)),
        default=list(RECEIVERS),
        help=f"receivers, comma separated (default: {','.join(RECEIVERS)})",
    )
    parser.add_argument(
        "--data",
        type=_names(DATASETS),
        default=list(DATASETS),
        help="data sets, comma separated (default: ct,small)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="send over mutual DICOM-TLS: the node's node.tls port, Orthanc with "
        "DicomTlsEnabled, storescp +tls (one throw-away CA; see ingest_bench/tls.py)",
    )
    parser.add_argument(
        "--sender-defaults",
        action="store_true",
        help="also run every receiver with storescu at its defaults (no TCP_NODELAY)",
    )
    parser.add_argument(
        "--sender-defaults-repeat",
        type=_positive,
        default=None,
        help="runs per receiver in the --sender-defaults pass (default: --repeat)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the timed runs, send each data set once more to a node under py-spy "
        "(not timed); keep the folded stacks in DIR and print the hot spots",
    )
    parser.add_argument(
        "--profile-view",
        choices=("active", "gil", "both"),
        default="both",
        help="active: every busy thread, I/O included; gil: only Python holding the GIL "
        "(one profiled run per view and data set)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every sample here")
    parser.add_argument(
        "--note", default="", help="a line to print and keep with the figures (e.g. the code)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--workdir-parent", type=Path, default=None, help="where to create the work folder"
    )
    parser.add_argument(
        "--timeout", type=_positive, default=900, help="seconds one storescu run may take"
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return [n for n in allowed if n in names]  # keep the canonical order

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # A log file or pipe gets wide tables too, instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 150)
    parent = options.workdir_parent or Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="dicomnode-bench-", dir=parent))
    started = datetime.now(UTC)
    samples: list[Sample] = []
    try:
        machine = describe(workdir)
        console.print(machine_table(machine, started, options.note))
        tls = BenchTLS.make(workdir / "pki") if options.tls else None
        datasets = _generate(console, workdir / "data", options)
        samples += _timed_runs(console, workdir, datasets, options, tls)
        summaries = [
            summarise(group, data) for data in datasets for group in _groups(samples, data.key)
        ]
        console.print()
        transport = "over mutual DICOM-TLS" if tls is not None else ""
        print_tables(console, datasets, summaries, DURABILITY, transport)
        if options.json is not None:  # before profiling: the timed figures are kept first
            _write_json(options, machine, started, datasets, samples, summaries)
            console.print(f"samples written to {options.json}")
        if options.profile is not None:
            _profile(console, workdir, datasets, options, tls)
        revision_after = git_revision()
        if revision_after not in machine.dicomnode:
            console.print(
                f"[red]WARNING[/red] dicomnode changed during the run: it started at "
                f"{machine.dicomnode} and ends at {revision_after}; the figures mix versions"
            )
    finally:
        if options.keep:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            os.sync()  # see run_once: freed inodes count as recent for a minute once clean
    failed = [s for s in samples if not s.ok]
    for s in failed:
        console.print(
            f"[red]FAILED[/red] {s.receiver} {s.dataset}: storescu exit {s.sender_rc}, "
            f"stored {s.stored}/{s.expected} {s.note}"
        )
    return 1 if failed else 0


def _generate(console: Console, folder: Path, options: argparse.Namespace) -> list[DataSet]:
    """Write the data sets once; the time it takes is shown and kept out of every figure."""
    datasets: list[DataSet] = []
    for key in options.data:
        start = time.perf_counter()
        if key == "ct":
            spec = CTPhantomSpec(slices=options.slices, rows=512, columns=512)
            paths = write_ct_phantom(folder / key, spec).paths
            label = f"CT series {options.slices} x 512x512"
        else:
            paths = write_small_instances(folder / key, count=options.small_count)
            label = "small instances (16x16 CT)"
        size = sum(p.stat().st_size for p in paths)
        elapsed = time.perf_counter() - start
        datasets.append(DataSet(key, label, folder / key, len(paths), size))
        console.print(
            f"generated {label}: {len(paths)} files, {size / 1e6:.1f} MB "
            f"in {elapsed:.1f} s (not part of any timing)"
        )
    os.sync()  # else the first receiver's fsyncs write the generated files out too
    return datasets


def _timed_runs(
    console: Console,
    workdir: Path,
    datasets: Sequence[DataSet],
    options: argparse.Namespace,
    tls: BenchTLS | None,
) -> list[Sample]:
    passes = [(True, options.repeat)]
    if options.sender_defaults:
        passes.append((False, options.sender_defaults_repeat or options.repeat))
    samples: list[Sample] = []
    number = 0
    for nodelay, repeat in passes:
        console.rule(sender_label(nodelay) + (", mutual DICOM-TLS" if tls is not None else ""))
        for data in datasets:
            for rep in range(1, repeat + 1):
                for name in _rotated(options.only, rep - 1):
                    number += 1
                    sample = run_once(
                        RECEIVERS[name],
                        data,
                        workdir / "runs" / f"{number:03d}-{name}",
                        sender_nodelay=nodelay,
                        timeout_s=options.timeout,
                        tls=tls,
                    )
                    samples.append(sample)
                    _print_sample(console, sample, rep, repeat)
    return samples


def _rotated(names: Sequence[str], by: int) -> list[str]:
    """``names`` started ``by`` places later: each receiver takes each turn in a run order."""
    shift = by % len(names)
    return [*names[shift:], *names[:shift]]


def _print_sample(console: Console, s: Sample, rep: int, repeat: int) -> None:
    status = "ok" if s.ok else "[red]FAILED[/red]"
    console.print(
        f"{s.dataset:5} run {rep}/{repeat} {s.receiver:8} {s.wall_s:7.2f} s  "
        f"{s.expected / s.wall_s:7.1f} inst/s  stored {s.stored}/{s.expected}  "
        f"peak RSS {s.peak_rss_bytes / 2**20:5.0f} MiB  "
        f"receiver CPU {s.receiver_cpu_s:6.2f} s  {status}" + (f"  {s.tls}" if s.tls else "")
    )


def _groups(samples: Sequence[Sample], dataset: str) -> list[list[Sample]]:
    """The samples of one data set, grouped by sender setting and receiver, in run order."""
    keys = dict.fromkeys((s.sender_nodelay, s.receiver) for s in samples if s.dataset == dataset)
    return [
        [s for s in samples if s.dataset == dataset and (s.sender_nodelay, s.receiver) == key]
        for key in keys
    ]


def _profile(
    console: Console,
    workdir: Path,
    datasets: Sequence[DataSet],
    options: argparse.Namespace,
    tls: BenchTLS | None,
) -> None:
    """More, untimed node runs with py-spy attached to the node: one per view and data set."""
    out_dir: Path = options.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    views = ("active", "gil") if options.profile_view == "both" else (options.profile_view,)
    for view in views:
        for data in datasets:
            folded = out_dir / f"node-{data.key}-{view}.folded"
            run_dir = workdir / "runs" / f"profile-{data.key}-{view}"
            wall_s = _profiled_run(run_dir, data, folded, options, tls, gil=view == "gil")
            console.print(
                f"profiled node on {data.key} ({view} view): {wall_s:.2f} s under py-spy "
                f"(slower than unprofiled); folded stacks in {folded}"
            )
            profile = hotspots.summarise(folded)
            title = f"node, {data.key}, {view} view"
            console.print(hotspots.hotspot_table(title, profile, by_total=False))
            console.print(hotspots.hotspot_table(title, profile, by_total=True))
            console.print(hotspots.package_table(title, profile))


def _profiled_run(
    run_dir: Path,
    data: DataSet,
    folded: Path,
    options: argparse.Namespace,
    tls: BenchTLS | None,
    *,
    gil: bool,
) -> float:
    sample = run_once(
        RECEIVERS["node"],
        data,
        run_dir,
        sender_nodelay=True,
        timeout_s=options.timeout,
        profiler=hotspots.Attacher(folded, gil=gil),
        tls=tls,
    )
    return sample.wall_s


def _write_json(
    options: argparse.Namespace,
    machine: Machine,
    started: datetime,
    datasets: Sequence[DataSet],
    samples: Sequence[Sample],
    summaries: Sequence[Summary],
) -> None:
    document = {
        "date": started.isoformat(timespec="seconds"),
        "note": options.note,
        "argv": sys.argv[1:],
        "machine": asdict(machine),
        "datasets": [{**asdict(d), "folder": str(d.folder)} for d in datasets],
        "samples": [asdict(s) for s in samples],
        "summaries": [asdict(s) for s in summaries],
    }
    options.json.write_text(json.dumps(document, indent=2) + "\n")
