"""Medians over repeats, one table per data set and sender setting, and the node's ratios.

Throughput is derived from the median wall time, so instances/s and MB/s (10^6 bytes)
describe the same run. A ratio node/X of throughput above 1 means the node is faster;
a ratio node/X of peak RSS above 1 means the node uses more memory.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from ingest_bench.measure import DataSet, Sample

MIB = 2**20


@dataclass(frozen=True, slots=True)
class Summary:
    """The median of a receiver's repeats for one data set and sender setting."""

    receiver: str
    dataset: str
    sender_nodelay: bool
    runs: int
    failed: int
    wall_s: float
    wall_min_s: float
    wall_max_s: float
    instances_per_s: float
    mb_per_s: float
    peak_rss_bytes: int
    idle_rss_bytes: int
    receiver_cpu_s: float
    sender_cpu_s: float
    stored: str


def summarise(samples: Sequence[Sample], data: DataSet) -> Summary:
    walls = [s.wall_s for s in samples]
    wall = statistics.median(walls)
    return Summary(
        receiver=samples[0].receiver,
        dataset=data.key,
        sender_nodelay=samples[0].sender_nodelay,
        runs=len(samples),
        failed=sum(not s.ok for s in samples),
        wall_s=wall,
        wall_min_s=min(walls),
        wall_max_s=max(walls),
        instances_per_s=data.count / wall,
        mb_per_s=data.size_bytes / 1e6 / wall,
        peak_rss_bytes=int(statistics.median(s.peak_rss_bytes for s in samples)),
        idle_rss_bytes=int(statistics.median(s.idle_rss_bytes for s in samples)),
        receiver_cpu_s=statistics.median(s.receiver_cpu_s for s in samples),
        sender_cpu_s=statistics.median(s.sender_cpu_s for s in samples),
        stored=", ".join(sorted({f"{s.stored}/{s.expected}" for s in samples})),
    )


def sender_label(sender_nodelay: bool) -> str:
    if sender_nodelay:
        return "storescu and storescp with TCP_NODELAY=1"
    return "storescu at its defaults (no TCP_NODELAY; Nagle on)"


def results_table(
    data: DataSet, summaries: Sequence[Summary], durability: dict[str, str], transport: str = ""
) -> Table:
    nodelay = summaries[0].sender_nodelay
    table = Table(
        title=f"{data.label}: {data.count} instances, {data.size_bytes / 1e6:.1f} MB "
        f"- {sender_label(nodelay)}" + (f", {transport}" if transport else ""),
        title_justify="left",
    )
    for header in (
        "receiver",
        "stored",
        "wall s (median)",
        "wall min-max",
        "inst/s",
        "MB/s",
        "peak RSS MiB",
        "idle RSS MiB",
        "receiver CPU s",
        "storescu CPU s",
    ):
        table.add_column(header, justify="left" if header in {"receiver", "stored"} else "right")
    for s in summaries:
        stored = s.stored if not s.failed else f"[red]{s.stored} ({s.failed} failed)[/red]"
        table.add_row(
            s.receiver,
            stored,
            f"{s.wall_s:.2f}",
            f"{s.wall_min_s:.2f}-{s.wall_max_s:.2f}",
            f"{s.instances_per_s:.1f}",
            f"{s.mb_per_s:.1f}",
            f"{s.peak_rss_bytes / MIB:.0f}",
            f"{s.idle_rss_bytes / MIB:.0f}",
            f"{s.receiver_cpu_s:.2f}",
            f"{s.sender_cpu_s:.2f}",
        )
    table.caption = "an acknowledgement means: " + "; ".join(
        f"{s.receiver}: {durability[s.receiver]}" for s in summaries if s.receiver in durability
    )
    table.caption_justify = "left"
    return table


def ratios_table(rows: Sequence[tuple[str, Summary, Summary]], transport: str = "") -> Table:
    """Node versus each other receiver; ``rows`` holds (setting label, node, other)."""
    table = Table(
        title=(f"{transport}: " if transport else "")
        + "node / other: throughput >1 means the node is FASTER; "
        "peak RSS >1 means the node uses MORE memory",
        title_justify="left",
    )
    for header in ("data set, sender", "versus", "throughput (inst/s ratio)", "peak RSS ratio"):
        table.add_column(header, justify="right" if "ratio" in header else "left")
    for label, node, other in rows:
        speed = node.instances_per_s / other.instances_per_s
        memory = node.peak_rss_bytes / other.peak_rss_bytes if other.peak_rss_bytes else 0.0
        colour = "green" if speed >= 1 else "red"
        table.add_row(label, other.receiver, f"[{colour}]{speed:.2f}[/{colour}]", f"{memory:.2f}")
    return table


def print_tables(
    console: Console,
    datasets: Sequence[DataSet],
    summaries: Sequence[Summary],
    durability: dict[str, str],
    transport: str = "",
) -> None:
    ratio_rows: list[tuple[str, Summary, Summary]] = []
    for nodelay in (True, False):
        for data in datasets:
            group = [s for s in summaries if s.dataset == data.key and s.sender_nodelay is nodelay]
            if not group:
                continue
            console.print(results_table(data, group, durability, transport))
            console.print()
            node = next((s for s in group if s.receiver == "node"), None)
            if node is None:
                continue
            short = "TCP_NODELAY=1" if nodelay else "storescu defaults"
            ratio_rows += [(f"{data.key}, {short}", node, s) for s in group if s is not node]
    if ratio_rows:
        console.print(ratios_table(ratio_rows, transport))
        console.print()
