"""A Triton Inference Server for tests: NVIDIA PyTriton in a virtual environment of its own.

``nvidia-pytriton`` ships ``tritonserver`` inside its wheel, but needs numpy < 2 while
dicomnode's environment has numpy 2, so it gets its own venv (:func:`ensure_venv`),
made once in a cache folder (``DICOMNODE_PYTRITON_VENV``, else
``$XDG_CACHE_HOME/dicomnode/pytriton-<digest of the requirements>``): about half a
minute and 450 MB here, then reused. :class:`PyTritonServer` runs ``pytriton_serve.py`` (beside this
file) with that venv's Python: it serves one ONNX model through onnxruntime on the CPU,
every port bound to 127.0.0.1, and is stopped by its PID (then the ``tritonserver`` it
started, by that PID, should it outlive its parent).

Triton's Python backend starts a stub that loads ``libpython`` by name. On an interpreter
built outside the system (pyenv) the system's ``libpython3.11.so`` has another patch
version, and the stub fails in ``multiprocessing`` (``'_thread.RLock' object has no
attribute '_recursion_count'``): the server gets the interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomnode.testing.ports import LOOPBACK, free_port
from dicomnode.testing.process import (
    HarnessError,
    ManagedProcess,
    PeerStartError,
    poll_until,
)

# numpy < 2 for PyTriton; onnxruntime runs the model inside it.
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4", "onnxruntime==1.32.0")
SERVE_SCRIPT = Path(__file__).with_name("pytriton_serve.py")
_INSTALL_TIMEOUT_S = 900.0
_START_TIMEOUT_S = 120.0


def venv_folder() -> Path:
    """Where the PyTriton venv lives (it is kept: making it takes half a minute)."""
    chosen = os.environ.get("DICOMNODE_PYTRITON_VENV")
    if chosen:
        return Path(chosen)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:12]
    return cache / "dicomnode" / f"pytriton-{digest}"


def ensure_venv(folder: Path | None = None) -> Path:
    """The venv's Python, making the venv first if it is not there (PeerStartError if pip fails).

    A marker naming the requirements is written last, so a cut-short install is made
    again; a lock beside the folder makes two test runs that start at once make it once.
    """
    folder = folder or venv_folder()
    python = folder / "bin" / "python"
    marker = folder / "requirements.json"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and json.loads(marker.read_text()) == list(REQUIREMENTS):
            return python
        shutil.rmtree(folder, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(folder)], "venv")
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, *REQUIREMENTS], "pip install")
        marker.write_text(json.dumps(list(REQUIREMENTS)))
    return python


class PyTritonServer:
    """``pytriton_serve.py MODEL NAME`` on free loopback ports; ``stop`` ends it by PID."""

    def __init__(self, python: Path, model: Path, name: str) -> None:
        self.python = python
        self.model = model
        self.name = name
        self.http_port = free_port()
        self._folder = Path(tempfile.mkdtemp(prefix="dicomnode-pytriton-"))
        self._process: ManagedProcess | None = None
        self._children: set[int] = set()

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint, as the triton runner's ``url`` takes it."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self._folder / "pytriton.log"

    def start(self) -> Self:
        argv = [
            str(self.python),
            "-I",  # isolated: not even the script's folder on sys.path
            str(SERVE_SCRIPT),
            str(self.model),
            self.name,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ]
        library = sysconfig.get_config_var("LIBDIR")
        path = os.pathsep.join(p for p in (library, os.environ.get("LD_LIBRARY_PATH")) if p)
        env = {"LD_LIBRARY_PATH": path, "HOME": str(self._folder)}  # PyTriton's workspace
        process = ManagedProcess(argv, log_path=self.log_path, env=env, cwd=self._folder)
        self._process = process.start()
        try:
            poll_until(self._ready, timeout=_START_TIMEOUT_S, what="PyTriton model ready")
        except HarnessError as exc:
            failure = process.describe_failure()
            self.stop()
            raise PeerStartError(f"PyTriton did not serve {self.name!r}: {failure}") from exc
        self._children = _descendants(process.pid)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._children |= _descendants(process.pid) if process.running else set()
            process.stop(timeout=30.0)
        for pid in sorted(self._children):  # tritonserver, if its parent died first
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._children = set()
        shutil.rmtree(self._folder, ignore_errors=True)

    def log_text(self) -> str:
        return self._process.log_text() if self._process is not None else ""

    def _ready(self) -> bool:
        process = self._process
        if process is None or not process.running:
            raise PeerStartError("PyTriton exited while starting")
        url = f"http://{self.url}/v2/models/{self.name}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise PeerStartError(f"{what} exited {done.returncode}: {done.stderr[-3000:]}")


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's children lists)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = {int(c) for c in task.read_text().split()}
            except (OSError, ValueError):
                continue
            pending.extend(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
