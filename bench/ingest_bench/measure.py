"""One timed run: a fresh receiver, one storescu run, then what it cost and what it kept.

Memory is the receiver's peak resident set (``VmHWM``), summed over the process and any
children it started, read after the transfer and before the receiver stops. CPU is the
receiver's user + system time during the transfer, all threads. Between runs the page
cache is flushed (``sync``), so one receiver's unsynced writes (storescp's) are not
paid for by the next receiver's fsyncs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchkit.procstats import cpu_s, peak_rss, rss
from ingest_bench.hotspots import Attacher
from ingest_bench.receivers import Receiver
from ingest_bench.sender import send
from ingest_bench.tls import BenchTLS, negotiated

_STORED_TIMEOUT_S = 60.0
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class DataSet:
    """Files generated once per run and sent, unchanged, to every receiver."""

    key: str  # "ct" or "small"
    label: str
    folder: Path
    count: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One receiver's figures for one transfer of one data set."""

    receiver: str
    dataset: str
    sender_nodelay: bool
    wall_s: float
    expected: int
    stored: int
    sender_rc: int
    idle_rss_bytes: int
    peak_rss_bytes: int
    receiver_cpu_s: float
    sender_cpu_s: float
    note: str = ""
    tls: str = ""  # under --tls: the version and cipher suite agreed with the receiver

    @property
    def ok(self) -> bool:
        return self.sender_rc == 0 and self.stored == self.expected


def run_once(
    factory: Callable[[Path, BenchTLS | None], Receiver],
    data: DataSet,
    run_dir: Path,
    *,
    sender_nodelay: bool,
    timeout_s: float,
    profiler: Attacher | None = None,
    tls: BenchTLS | None = None,
) -> Sample:
    """Start a receiver in the empty ``run_dir``, send ``data`` to it, stop it, measure.

    ``profiler`` attaches once the receiver listens, before the clock starts, and
    detaches before the receiver stops. ``run_dir`` is kept until the whole benchmark
    ends: on ext4 without a journal (this machine's root file system) a new inode is
    searched for past every inode freed in the last minute, in the folder's block group,
    so deleting 2,000 files made the next receiver's file creations up to ~0.9 ms
    dearer each: a cost of the benchmark's order, not of the receiver.

    With ``tls``, storescu sends over mutual DICOM-TLS; one handshake before the clock
    starts records what the receiver negotiates.
    """
    run_dir.mkdir(parents=True)
    try:
        with factory(run_dir, tls) as receiver:
            try:
                agreed = negotiated(receiver.port, tls) if tls is not None else ""
                if profiler is not None:
                    profiler.attach(receiver.pid)
                process = psutil.Process(receiver.pid)
                idle_rss = rss(process)
                cpu_before = cpu_s(process)
                sent = send(
                    data.folder,
                    receiver.ae_title,
                    receiver.port,
                    tcp_nodelay=sender_nodelay,
                    timeout_s=timeout_s,
                    tls_args=tls.sender_args() if tls is not None else (),
                )
                cpu_after = cpu_s(process)
                stored = _wait_stored(receiver, data.count)
                peak = peak_rss(process)
                name = receiver.name
            finally:
                if profiler is not None:
                    profiler.detach()
    finally:
        os.sync()
    return Sample(
        receiver=name,
        dataset=data.key,
        sender_nodelay=sender_nodelay,
        wall_s=sent.wall_s,
        expected=data.count,
        stored=stored,
        sender_rc=sent.returncode,
        idle_rss_bytes=idle_rss,
        peak_rss_bytes=peak,
        receiver_cpu_s=cpu_after - cpu_before,
        sender_cpu_s=sent.cpu_s,
        note=_last_line(sent.log_tail) if sent.returncode != 0 else "",
        tls=agreed,
    )


def _wait_stored(receiver: Receiver, expected: int) -> int:
    """The stored count once it reaches ``expected``, or whatever it is at the deadline.

    Every receiver here answers a C-STORE only after its file is written, so this
    normally returns on the first look; the wait covers a receiver that does not.
    """
    deadline = time.monotonic() + _STORED_TIMEOUT_S
    while True:
        stored = receiver.stored()
        if stored >= expected or time.monotonic() >= deadline:
            return stored
        time.sleep(_POLL_S)


def _last_line(text: str) -> str:
    lines = text.splitlines()
    return lines[-1] if lines else ""
