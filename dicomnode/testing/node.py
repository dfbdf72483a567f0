"""A dicomnode in its own process, for tests and benchmarks that kill or restart it.

It runs exactly what an operator runs (``python -m dicomnode serve --config FILE``), so
a SIGKILL here is a real crash: nothing in the test process can tidy up after it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from dicomnode.config import Config, load_config
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.process import ManagedProcess, PeerStartError

NODE_AE = "DICOMNODE"


class NodeProcess:
    """``dicomnode serve`` on a free loopback port, its config and logs in ``workdir``."""

    def __init__(self, workdir: Path, settings: Mapping[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "dicomnode.yaml"
        document: dict[str, Any] = {
            "node": {"ae_title": NODE_AE, "host": LOOPBACK, "port": self.port},
            "storage": {"path": str(workdir / "var")},
            "rules_dir": str(workdir / "rules"),
            "admin": {"port": 0},
            "logging": {"format": "json", "level": "info"},
        }
        for key, value in (settings or {}).items():
            if isinstance(value, Mapping) and isinstance(document.get(key), dict):
                document[key] = {**document[key], **value}
            else:
                document[key] = value
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(document), encoding="utf-8")
        self.config: Config = load_config(self.config_path)
        self._runs = 0
        self._process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"{NODE_AE}@{LOOPBACK}:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            raise PeerStartError("the node was never started")
        return self._process

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def start(self, timeout: float = 30.0) -> Self:
        """Start (or restart) the node and wait until it accepts connections."""
        self._runs += 1
        self._process = ManagedProcess(
            [sys.executable, "-m", "dicomnode", "serve", "--config", str(self.config_path)],
            log_path=self.workdir / f"node-{self._runs}.log",
        ).start()
        try:
            wait_for_port(self.port, timeout=timeout)
        except Exception as exc:
            raise PeerStartError(self._process.describe_failure()) from exc
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        proc = self.process.popen
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.process.stop()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the graceful stop an operator or systemd asks for."""
        return None if self._process is None else self._process.stop(timeout)

    def logs(self) -> str:
        """Everything every run of this node has written, oldest first."""
        return "".join(
            (self.workdir / f"node-{n}.log").read_text(errors="replace")
            for n in range(1, self._runs + 1)
            if (self.workdir / f"node-{n}.log").exists()
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
