"""The node processes of one scenario, started together and measured together.

A member is one ``python -m dicomnode serve`` command line: a plain node, or a
supervisor with ``--workers N`` whose workers are its children. A member counts as
ready once its port listens and its log holds one ``node_started`` event per process
(the workers of ``--workers N`` start one by one behind one port). CPU is read over each
member and its children (``benchkit.procstats``), and over PostgreSQL's postmaster and
its backends when there is one.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil
from sqlalchemy import create_engine, select

from benchkit import nodelog
from benchkit.procstats import cpu_s, peak_rss
from dicomnode.store.tables import InstanceRow
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.ports import wait_for_port
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import ManagedProcess, PeerStartError

# Short clocks: a series completes 1 s after its association ends (one per series).
COMPLETION = {"quiet_seconds": 5.0, "settle_seconds": 1.0, "max_wait_seconds": 600.0}


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One command line of a scenario: its folder, settings and ``--workers``."""

    name: str
    workdir: Path
    settings: Mapping[str, Any]
    workers: int = 1
    explicit_workers: bool = False  # pass ``--workers 1`` even for one (as asked)


class Member:
    """One ``dicomnode serve`` process (with its workers, if any)."""

    def __init__(self, spec: MemberSpec) -> None:
        self.spec = spec
        # NodeProcess writes the config file (free port, JSON logs) and parses it back.
        self.node = NodeProcess(spec.workdir, {"completion": COMPLETION, **spec.settings})
        # DiskGuard measures free space in storage.path, which a node on shared storage
        # and PostgreSQL never creates (tests/cluster xfail): create it beforehand.
        self.node.config.storage.path.mkdir(parents=True, exist_ok=True)
        self.process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def database_url(self) -> str:
        return self.node.config.database_url

    def start(self, timeout_s: float) -> None:
        argv = [sys.executable, "-m", "dicomnode", "serve", "--config", str(self.node.config_path)]
        if self.spec.workers > 1 or self.spec.explicit_workers:
            argv += ["--workers", str(self.spec.workers)]
        self.process = ManagedProcess(argv, log_path=self.spec.workdir / "node.log").start()
        try:
            wait_for_port(self.port, timeout=timeout_s)
            nodelog.wait_for_events(
                self.process.log_path,
                lambda events: len(nodelog.named(events, "node_started")) >= self.spec.workers,
                timeout_s=timeout_s,
                what=f"{self.spec.workers} node_started events",
            )
        except Exception as exc:
            raise PeerStartError(self.process.describe_failure()) from exc

    def psutil_process(self) -> psutil.Process:
        if self.process is None:
            raise PeerStartError(f"{self.spec.name} was never started")
        return psutil.Process(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=60.0)


class Group:
    """The members of one scenario, started in parallel and stopped by PID."""

    def __init__(self, specs: Sequence[MemberSpec], postgres: PostgresCluster | None) -> None:
        self.members = [Member(spec) for spec in specs]
        self._postgres = postgres

    def start(self, timeout_s: float) -> None:
        with ThreadPoolExecutor(len(self.members)) as pool:
            list(pool.map(lambda member: member.start(timeout_s), self.members))

    def node_cpu_s(self) -> float:
        return sum(cpu_s(m.psutil_process()) for m in self.members)

    def database_cpu_s(self) -> float:
        """The postmaster and every backend alive now (0 on SQLite).

        A backend that ends between two readings takes its CPU with it; the nodes keep
        their pooled connections open, so little is missed.
        """
        if self._postgres is None or self._postgres.pid is None:
            return 0.0
        return cpu_s(psutil.Process(self._postgres.pid))

    def peak_rss(self) -> int:
        return sum(peak_rss(m.psutil_process()) for m in self.members)

    def stored(self) -> dict[str, int]:
        """Instances in the index (one database for all members), per writing node.

        On shared storage a spool name is ``<node id>/ab/<random>.dcm``; a node with a
        local spool writes ``ab/<random>.dcm`` (counted under "local").
        """
        engine = create_engine(self.members[0].database_url)
        try:
            with engine.connect() as connection:
                names = connection.scalars(select(InstanceRow.spool_name)).all()
        finally:
            engine.dispose()
        writers = Counter(n.split("/", 1)[0] if n.count("/") == 2 else "local" for n in names)
        return dict(sorted(writers.items()))

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
