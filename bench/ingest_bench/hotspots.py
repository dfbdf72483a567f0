"""Where the node spends its time: py-spy attached to the running node, folded stacks.

py-spy samples every thread of the node from outside (no change to the node) and writes
folded stacks (``frame;frame;frame count``, one function per frame with ``--function``).
"Self" is the share of samples whose innermost Python frame is the function (time in a
C call such as ``os.fsync`` counts as self time of the Python function that made it);
"total" is the share of samples in which it appears anywhere. Without ``--idle``, py-spy
leaves out threads sleeping in the kernel (``time.sleep``, a blocking ``recv``), so the
shares are of the node's busy time, every thread together. py-spy pauses the node for
each sample (the accurate mode), which is why the profiled run is never a timed one; in
that mode it reports threads parked in a lock or a selector as busy, so samples whose
innermost frame is one of `_WAITS` (the main thread's ``wake.wait()``, the scheduler,
the server's accept loop) are counted as idle and left out. It also counts a thread
that has woken from ``time.sleep`` and waits for the GIL as busy: pynetdicom's reactors
sleep 1 ms per loop, so their sleep lines show up large in this view.

The ``gil`` view (``py-spy --gil``) keeps only samples of the thread holding the GIL:
Python work alone, without fsync, SQLite's commit or any wait, which is what to shrink
when the node is CPU bound.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Hotspot:
    function: str
    self_share: float
    total_share: float


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int  # busy samples with a Python stack
    unattributed: int  # busy samples py-spy could not give a Python stack for
    idle: int  # samples of threads parked in a wait (see `_WAITS`), left out
    by_self: tuple[Hotspot, ...]
    by_total: tuple[Hotspot, ...]
    by_package: tuple[tuple[str, float], ...]  # self share per top-level package


def py_spy() -> Path | None:
    """py-spy from this interpreter's environment, else from ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return beside
    found = shutil.which("py-spy")
    return Path(found) if found else None


class Recorder:
    """``py-spy record`` on one PID until `stop`; ended by its own PID only."""

    def __init__(self, pid: int, output: Path, *, gil: bool = False, rate: int = 200) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output = output
        self._log = output.with_suffix(".log")
        argv = [
            str(binary),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--function",
            *(["--gil"] if gil else []),
            "--output",
            str(output),
        ]
        with self._log.open("wb") as log:
            self._popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        """SIGINT makes py-spy write its file and exit."""
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGINT)
            try:
                self._popen.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if not self.output.is_file():
            log = self._log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"py-spy wrote no profile; its output:\n{log}")


class Attacher:
    """A `Recorder` attached to a process when asked, and stopped before the process stops.

    py-spy must let go of a process before it exits: a node that exited while py-spy had
    one of its threads stopped for a sample hung here half exited (a zombie, one thread
    in tracing stop, py-spy in ``waitpid``) until py-spy was killed. So the benchmarks
    call `detach` before they stop the node, never after.
    """

    def __init__(self, output: Path, *, gil: bool, warm_up_s: float = 1.0) -> None:
        self.output = output
        self._gil = gil
        self._warm_up_s = warm_up_s  # py-spy needs a moment before its first sample
        self._recorder: Recorder | None = None

    def attach(self, pid: int) -> None:
        self._recorder = Recorder(pid, self.output, gil=self._gil)
        time.sleep(self._warm_up_s)

    def detach(self) -> None:
        if self._recorder is not None:
            recorder, self._recorder = self._recorder, None
            recorder.stop()


def _function_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({match['file']})"


def _package(name: str) -> str:
    """``f (pynetdicom/dul.py)`` -> ``pynetdicom``; the standard library by module."""
    where = name[name.rfind("(") + 1 : -1]
    top = where.split("/", 1)[0]
    return top.removesuffix(".py") or "?"


# Thread entry frames are in every sample; ranking them by total share says nothing.
_WRAPPERS = ("(threading.py)",)
_WAITS = frozenset(
    {
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "_PollLikeSelector.select (selectors.py)",
        "BaseSelector.select (selectors.py)",
        "_worker (concurrent/futures/thread.py)",  # an idle pool thread in queue.get
    }
)


def summarise(folded: Path, top: int = 15) -> Profile:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    samples = unattributed = idle = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            unattributed += count
            continue
        if frames[-1] in _WAITS:
            idle += count
            continue
        samples += count
        self_counts[frames[-1]] += count
        package_counts[_package(frames[-1])] += count
        for name in set(frames):
            if not name.endswith(_WRAPPERS):
                total_counts[name] += count
    if samples == 0:
        return Profile(0, unattributed, idle, (), (), ())

    def ranked(counts: Counter[str]) -> tuple[Hotspot, ...]:
        return tuple(
            Hotspot(name, self_counts[name] / samples, total_counts[name] / samples)
            for name, _ in counts.most_common(top)
        )

    return Profile(
        samples=samples,
        unattributed=unattributed,
        idle=idle,
        by_self=ranked(self_counts),
        by_total=ranked(total_counts),
        by_package=tuple((p, n / samples) for p, n in package_counts.most_common(top)),
    )


def hotspot_table(title: str, profile: Profile, *, by_total: bool) -> Table:
    order = "total (inclusive)" if by_total else "self (exclusive)"
    table = Table(
        title=f"{title}: top functions by {order} share of {profile.samples} busy samples "
        f"({profile.unattributed} had no Python stack, {profile.idle} were waits)",
        title_justify="left",
    )
    table.add_column("function (module)")
    table.add_column("self %", justify="right")
    table.add_column("total %", justify="right")
    for spot in profile.by_total if by_total else profile.by_self:
        table.add_row(spot.function, f"{spot.self_share:.1%}", f"{spot.total_share:.1%}")
    return table


def package_table(title: str, profile: Profile) -> Table:
    table = Table(title=f"{title}: self share by package", title_justify="left")
    table.add_column("package or module")
    table.add_column("self %", justify="right")
    for package, share in profile.by_package:
        table.add_row(package, f"{share:.1%}")
    return table
