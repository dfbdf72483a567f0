"""DCMTK storescu, the one sender every receiver gets, timed from exec to exit.

DCMTK 3.6.7 as Debian builds it leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is
in the environment. The main comparison sets it on both DCMTK ends; a second pass can
run storescu at its defaults (the variable removed, not set to 0) to show what a
sender that nobody tuned sees.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STORESCU = Path("/usr/bin/storescu")  # by path: the venv has pynetdicom's storescu too
CALLING_AE = "BENCHSCU"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Sent:
    """What one storescu run did and cost."""

    returncode: int
    wall_s: float
    cpu_s: float  # storescu's own user + system time
    log_tail: str


def storescu_argv(
    folder: Path, ae_title: str, port: int, tls_args: Sequence[str] = ()
) -> list[str]:
    """Every file under ``folder``, one association, only the SOP classes present;
    ``tls_args`` (``BenchTLS.sender_args``) for DICOM-TLS."""
    return [
        str(STORESCU),
        "-aet",
        CALLING_AE,
        "-aec",
        ae_title,
        "-R",  # propose only the SOP classes found in the files (uncompressed syntaxes)
        "+sd",  # scan the folder
        "+r",  # recursively
        *tls_args,
        LOOPBACK,
        str(port),
        str(folder),
    ]


def sender_env(tcp_nodelay: bool) -> dict[str, str]:
    """This process's environment, with ``TCP_NODELAY=1`` or with no such variable."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def send(
    folder: Path,
    ae_title: str,
    port: int,
    *,
    tcp_nodelay: bool,
    timeout_s: float,
    tls_args: Sequence[str] = (),
) -> Sent:
    """Run storescu to completion and time it; a failure is reported, not raised."""
    argv = storescu_argv(folder, ae_title, port, tls_args)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv,
            env=sender_env(tcp_nodelay),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed and reaped storescu
        wall = time.perf_counter() - start
        return Sent(returncode=-1, wall_s=wall, cpu_s=0.0, log_tail=f"timed out after {wall:.0f} s")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = (done.stdout + done.stderr).strip()
    return Sent(returncode=done.returncode, wall_s=wall, cpu_s=cpu, log_tail=output[-2000:])


def dcmtk_version() -> str:
    """storescu's version line, e.g. ``storescu v3.6.7 2022-04-22``."""
    done = subprocess.run(
        [str(STORESCU), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    for line in done.stdout.splitlines():
        if "storescu v" in line:
            return line.strip("$ ").removeprefix("dcmtk: ")
    return "unknown"
