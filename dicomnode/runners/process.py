"""A model process: a child interpreter that imports one function and calls it on request.

The child is a fresh ``python`` started with ``subprocess``, not a fork: the node has
threads (associations, workers, TensorFlow's pools), and a forked copy of a threaded
process can inherit a lock held by a thread that does not exist in the child. It is not a
``multiprocessing`` spawn either, which would re-import the node's main module (the whole
``dicomnode`` command) in every child. The child gets the node's ``sys.path``, imports
only this module and the function, then answers on a socket pair with
``multiprocessing.connection``'s framing, one request at a time:
``(array, kwargs)`` -> ``("ok", result)`` or ``("error", type_name, message)``.
``None`` or a closed socket ends it, so children end with the node, even a killed one.

Starting a child costs about a second (an interpreter importing NumPy, this package and
the function's module), once per child: children are kept and reused, and the time limit
of a call starts when its child is ready.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from dicomnode.errors import ModelTimeoutError, RunnerError
from dicomnode.logs import get_logger
from dicomnode.runners.abc import InputArray, Prediction
from dicomnode.runners.callables import resolve_callable

log = get_logger(__name__)

START_TIMEOUT_SECONDS = 120.0  # a fresh interpreter importing the function's module
STOP_GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL

_CHILD_MAIN = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from dicomnode.runners.process import serve; serve(int(sys.argv[2]), sys.argv[3])"
)


class ModelProcess:
    """The node's end of one child process."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], connection: Connection):
        self.name = name
        self._process = process
        self._connection = connection

    @classmethod
    def start(cls, name: str, reference: str) -> ModelProcess:
        """Spawn a child for model ``name`` and wait until it has imported ``reference``."""
        started = time.monotonic()
        our_socket, their_socket = socket.socketpair()
        with their_socket:
            fd = their_socket.fileno()
            command = [sys.executable, "-c", _CHILD_MAIN, json.dumps(sys.path), str(fd), reference]
            process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        ours = Connection(our_socket.detach())
        child = cls(name, process, ours)
        try:
            if not ours.poll(START_TIMEOUT_SECONDS):
                raise RunnerError(
                    f"model {name!r}: its process did not start within {START_TIMEOUT_SECONDS:g} s"
                )
            message = ours.recv()
        except EOFError:
            raise RunnerError(
                f"model {name!r}: its process exited while starting (exit code {child.reap()})"
            ) from None
        except BaseException:
            child.stop()
            raise
        if message[0] != "ready":
            child.stop()
            raise RunnerError(f"model {name!r}: {message[2]}")
        log.info(
            "model_process_started",
            model=name,
            pid=process.pid,
            seconds=round(time.monotonic() - started, 3),
        )
        return child

    @property
    def alive(self) -> bool:
        return not self._connection.closed and self._process.poll() is None

    def call(self, array: InputArray, kwargs: dict[str, Any], timeout: float) -> Prediction:
        """The function's result; the child is killed when it takes longer than ``timeout``."""
        try:
            self._connection.send((array, kwargs))
            answered = self._connection.poll(timeout)
            message = self._connection.recv() if answered else None
        except (EOFError, OSError) as exc:  # the child died (crash, memory killer)
            raise RunnerError(
                f"model {self.name!r}: its process died (exit code {self.reap()})"
            ) from exc
        except BaseException:  # interrupted mid-call: the child's next answer would be stale
            self.stop()
            raise
        if message is None:
            self.stop()
            log.warning("model_process_killed", model=self.name, limit_seconds=timeout)
            raise ModelTimeoutError(
                f"model {self.name!r} exceeded its {timeout:g} s limit; its process was stopped"
            )
        if message[0] == "ok":
            result: Prediction = message[1]
            return result
        _, type_name, text = message
        raise RunnerError(f"model {self.name!r} failed: {type_name}: {text}")

    def reap(self) -> int | None:
        """The exit code of a child that closed its end (it is exiting); stop it if not."""
        self._connection.close()
        try:
            return self._process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.stop()
            return self._process.returncode

    def stop(self) -> None:
        """End the child now, whatever it is doing; safe to call twice."""
        self._connection.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def serve(fd: int, reference: str) -> None:
    """The child's main loop, on the socket ``fd`` the node passed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the node, which stops us
    connection = Connection(fd)
    try:
        function = resolve_callable(reference)
    except RunnerError as exc:
        connection.send(("error", "RunnerError", str(exc)))
        return
    connection.send(("ready",))
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the node is gone
            return
        if request is None:
            return
        array, kwargs = request
        try:
            reply: tuple[Any, ...] = ("ok", np.asarray(function(array, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - the process's root: every failure goes back
            reply = ("error", type(exc).__name__, str(exc))
        connection.send(reply)
