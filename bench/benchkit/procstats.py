"""What a process costs, read from ``/proc`` and psutil: always the process and its children.

Peak memory is ``VmHWM`` (the kernel's high-water mark of the resident set), so a peak
between two looks is never missed; it is summed over the process and any children it
started, which over-counts shared pages but never hides a worker process.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def family(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def rss(process: psutil.Process) -> int:
    """Resident set now, in bytes."""
    return sum(p.memory_info().rss for p in family(process))


def peak_rss(process: psutil.Process) -> int:
    """Sum of ``VmHWM`` (peak resident set) over the process and its children, in bytes."""
    total = 0
    for member in family(process):
        status = Path(f"/proc/{member.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_s(process: psutil.Process) -> float:
    """User + system seconds so far, every thread, children included."""
    total = 0.0
    for member in family(process):
        times = member.cpu_times()
        total += times.user + times.system
    return total
