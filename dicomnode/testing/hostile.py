"""Helpers for tests that attack a node in its own process: its events, metrics, memory.

The node runs as ``dicomnode serve`` (``NodeProcess``) with JSON log lines, on either
receiving path: pynetdicom's stock path is chosen by the environment at start-up
(``DICOMNODE_PYNETDICOM_STOCK=1``) and holds for the whole process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type stubs

from dicomnode.dicom import adapt
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import ScuSettings, echo
from dicomnode.errors import PeerError
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until

PATHS = ("adapted", "stock")


def start_node(workdir: Path, path: str, settings: Mapping[str, Any] | None = None) -> NodeProcess:
    """A node process on the ``adapted`` or ``stock`` receiving path."""
    node = NodeProcess(workdir, settings)
    saved = os.environ.get(adapt.STOCK_VARIABLE)
    os.environ[adapt.STOCK_VARIABLE] = "1" if path == "stock" else "0"
    try:
        node.start()
    finally:
        if saved is None:
            del os.environ[adapt.STOCK_VARIABLE]
        else:
            os.environ[adapt.STOCK_VARIABLE] = saved
    return node


def echo_succeeds(port: int, calling_ae: str = "ECHOSCU") -> bool:
    """Whether the node on ``port`` answers a C-ECHO with success now (it still serves)."""
    return echo_problem(port, calling_ae) is None


def echo_problem(port: int, calling_ae: str = "ECHOSCU") -> str | None:
    """Why a C-ECHO to the node on ``port`` fails now (as the CLI says it); None if not."""
    try:
        result = echo(
            parse_address(f"{NODE_AE}@{LOOPBACK}:{port}"), ScuSettings(calling_ae=calling_ae)
        )
    except PeerError as exc:
        return str(exc)
    return None if result.status == 0 else f"status 0x{result.status:04X}"


def stuck_report(node: NodeProcess, timeout: float = 10.0) -> str:
    """What a node that stopped answering is doing: every thread's stack (SIGUSR1, see
    ``docs/logs.md``) and its last log lines, for a test's failure message."""
    logs = node.logs()
    before = logs.count("most recent call first")
    try:
        os.kill(node.process.pid, signal.SIGUSR1)
        # Any thread may take the signal (a native one prints no "Current thread"), but
        # the main thread, waiting in run_until_signalled, is in every dump.
        poll_until(
            lambda: "run_until_signalled" in _after(node.logs(), before),
            timeout=timeout,
            what="the node's thread dump",
        )
    except (OSError, TimeoutError) as exc:
        return f"no thread dump ({exc!r})\n{node.logs()[-4000:]}"
    logs = node.logs()
    start = _dump_start(logs, before)
    return f"{logs[max(0, start - 3000) : start]}\n{logs[start : start + 12000]}"


def _dump_start(logs: str, before: int) -> int:
    """Where the dump after the first ``before`` ones starts (end of text if none yet)."""
    start = -1
    for _ in range(before + 1):
        start = logs.find("most recent call first", start + 1)
        if start < 0:
            return len(logs)
    return logs.rfind("\n", 0, start) + 1


def _after(logs: str, before: int) -> str:
    return logs[_dump_start(logs, before) :]


def events(node: NodeProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The node's JSON log events so far (those named ``event``, if given)."""
    found = []
    for line in node.logs().splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if event is None or record.get("event") == event:
            found.append(record)
    return found


def refusals(node: NodeProcess, reason: str) -> list[dict[str, Any]]:
    """Log events of refusals for ``reason`` (any event name)."""
    return [
        record
        for record in events(node)
        if record.get("reason") == reason or record.get("refusal") == reason
    ]


def admin_port(node: NodeProcess) -> int:
    poll_until(lambda: bool(events(node, "admin_listening")), timeout=30, what="the admin API")
    return int(events(node, "admin_listening")[-1]["port"])


def metric(node: NodeProcess, name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample's value from the node's ``/metrics`` (0 when absent)."""
    url = f"http://{LOOPBACK}:{admin_port(node)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    wanted = "".join(f'{key}="{value}",' for key, value in sorted((labels or {}).items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match[1] != name:
            continue
        present = "".join(f"{part}," for part in sorted(filter(None, (match[2] or "").split(","))))
        if all(f"{part}," in present for part in wanted.split(",") if part):
            return float(match[3])
    return 0.0


def connect(port: int, source: str = LOOPBACK, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the node from the loopback address ``source`` (127.x.y.z)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((LOOPBACK, port))
    return sock


@contextmanager
def peak_rss(pid: int, interval: float = 0.02) -> Iterator[list[int]]:
    """Sample ``pid``'s resident set size while the block runs; ``[peak]`` after it."""
    process = psutil.Process(pid)
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(5)
