"""``dicomnode serve --workers N``: N node processes on one host sharing the DICOM port.

One Python process receives on about one core (the GIL); a host with more cores takes
more by running several node processes. Each worker is a whole node with its own id
(``<node id>-w<i>``), its own folder on the shared storage and its own leases, bound
to the DICOM port with SO_REUSEPORT so that the kernel spreads associations over them;
together they are a cluster on one PostgreSQL database (SQLite has one writer, so it
is refused). Only worker 0 serves the admin API. The supervisor forwards SIGTERM,
SIGINT and SIGHUP to every worker, restarts one that dies, and exits when all stopped.
"""

from __future__ import annotations

import faulthandler
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from dicomnode.config import Config
from dicomnode.errors import ConfigError
from dicomnode.logs import get_logger

log = get_logger(__name__)

# A worker that exits within this long of its start failed to start: restarting it would
# only fail again, so the supervisor stops the others and reports it.
_START_GRACE_S = 10.0
_RESTART_DELAY_S = 1.0
_STOP_TIMEOUT_S = 60.0


def check_workers(config: Config, count: int) -> None:
    """Refuse ``--workers`` where the processes could not share the work safely."""
    if count > 1 and config.database_url.startswith("sqlite"):
        raise ConfigError(
            f"--workers {count} needs a PostgreSQL database (database.url): SQLite has one"
            " writer, and worker processes share one index"
        )


def worker_config(config: Config, index: int) -> Config:
    """Worker ``index``'s configuration: its own id and folder, the shared port."""
    node = config.node.model_copy(update={"id": f"{config.node_id}-w{index}", "reuse_port": True})
    storage = config.storage
    if storage.shared_path is None:
        storage = storage.model_copy(update={"shared_path": storage.path / "shared"})
    admin = config.admin
    if index > 0:
        admin = admin.model_copy(update={"enabled": False})
    return config.model_copy(update={"node": node, "storage": storage, "admin": admin})


class Supervisor:
    """Starts the workers as ``dicomnode serve --worker I`` and keeps them running."""

    def __init__(self, config_path: Path | None, count: int) -> None:
        self._config_path = config_path
        self._count = count
        self._workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self._stopping: int | None = None  # the signal that asked us to stop

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 after a clean stop, 1 if a worker could
        not start."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        # `systemctl kill -s USR1` reaches every process of the unit: the workers print
        # their threads' stacks (run_until_signalled), and this one must not die of it.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            for index in range(self._count):
                self._start(index)
            log.info("workers_started", count=self._count, pids=self._pids())
            return self._watch()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            faulthandler.unregister(signal.SIGUSR1)

    def _start(self, index: int) -> None:
        command = [sys.executable, "-m", "dicomnode", "serve", "--worker", str(index)]
        if self._config_path is not None:
            command += ["--config", str(self._config_path)]
        self._workers[index] = (subprocess.Popen(command), time.monotonic())

    def _watch(self) -> int:
        while self._stopping is None:
            for index, (process, started) in list(self._workers.items()):
                code = process.poll()
                if code is None:
                    continue
                if time.monotonic() - started < _START_GRACE_S:
                    log.error("worker_failed_to_start", worker=index, exit_code=code)
                    return 1
                log.error("worker_exited", worker=index, exit_code=code, restarting=True)
                time.sleep(_RESTART_DELAY_S)
                self._start(index)
            time.sleep(0.2)
        log.info("workers_stopping", signal=signal.Signals(self._stopping).name)
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        for process, _started in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)
        if signum != signal.SIGHUP:
            self._stopping = signum

    def _stop_all(self) -> None:
        for process, _started in self._workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for process, _started in self._workers.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _pids(self) -> list[int]:
        return [process.pid for process, _started in self._workers.values()]
