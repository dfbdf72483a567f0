"""What the figures were measured on: hardware, kernel, disk and every program's version."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pydicom
import pynetdicom
from rich.table import Table

import dicomnode
from dicomnode.testing.orthanc import orthanc_binary
from ingest_bench.sender import dcmtk_version


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    ram_gib: float
    kernel: str
    filesystem: str
    python: str
    dicomnode: str
    pynetdicom: str
    pydicom: str
    dcmtk: str
    orthanc: str

    def rows(self) -> list[tuple[str, str]]:
        return [(key.replace("_", " "), str(value)) for key, value in asdict(self).items()]


def describe(workdir: Path) -> Machine:
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        ram_gib=round(_meminfo_kib("MemTotal") / 2**20, 1),
        kernel=f"{platform.system()} {platform.release()}",
        filesystem=_filesystem_of(workdir),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        dicomnode=f"{dicomnode.__version__} ({git_revision()})",
        pynetdicom=pynetdicom.__version__,
        pydicom=pydicom.__version__,
        dcmtk=dcmtk_version(),
        orthanc=_orthanc_version(),
    )


def machine_table(machine: Machine, started: datetime, note: str = "") -> Table:
    """The machine, the date (UTC) and a note, as the first thing a benchmark prints."""
    table = Table(title="machine", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    table.add_row("date (UTC)", started.strftime("%Y-%m-%d %H:%M"))
    if note:
        table.add_row("note", note)
    for key, value in machine.rows():
        table.add_row(key, value)
    return table


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _filesystem_of(path: Path) -> str:
    """The mount holding ``path``: device, type and mount point (fsync cost lives there)."""
    target = path.resolve()
    best: tuple[str, str, str] = ("?", "?", "/")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount_point, fstype, *_ = line.split()
        if target.is_relative_to(mount_point) and len(mount_point) >= len(best[2]):
            best = (device, fstype, mount_point)
    device, fstype, mount_point = best
    return f"{fstype} on {device} (mounted at {mount_point})"


def git_revision() -> str:
    """The commit the node's code came from, and whether ``dicomnode/`` differs from it.

    Read again after the runs: a checkout that others commit to can change mid-run.
    """
    package = Path(dicomnode.__file__).resolve().parent
    git = ["git", "-C", str(package.parent)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", str(package)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"git {head}" + (", with uncommitted changes in dicomnode/" if changes else "")


def _orthanc_version() -> str:
    try:
        done = subprocess.run(
            [str(orthanc_binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "not installed"
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].rsplit("/", 1)[-1] if first else "unknown"
