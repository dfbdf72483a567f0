"""Loopback TCP ports for test peers: pick a free one, wait until one accepts."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

from dicomnode.testing.process import PeerStartError, poll_until

LOOPBACK = "127.0.0.1"


def require_loopback(host: str) -> str:
    """Return `host` if it is a loopback address; test peers must never reach a network."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"test peers talk over loopback only, not {host!r}")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` now.

    The kernel picks it (bind to port 0), so parallel test runs do not collide; another
    process could still take it before the peer binds, which the peers' start-up checks
    notice as an early exit.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((require_loopback(host), 0))
        port: int = sock.getsockname()[1]
        return port


class HeldPort:
    """A port this process binds without listening: connecting to it is refused, and no
    other process (a parallel test's node) can take it until ``release``.

    ``free_port`` hands out a port nobody holds, so a destination meant to be down could
    be answered by a stranger that bound it meanwhile; a test of "nothing listens" holds
    the port instead, and releases it just before its own peer starts there.
    """

    def __init__(self, host: str = LOOPBACK) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((require_loopback(host), 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> int:
        """Let a peer bind the port now; returns it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.port

    def __enter__(self) -> HeldPort:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


_REFUSING: list[HeldPort] = []


def refusing_port(host: str = LOOPBACK) -> int:
    """A port where nothing listens for the rest of this test process (held, never freed)."""
    held = HeldPort(host)
    _REFUSING.append(held)
    return held.port


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to `host:port` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_TCP_LISTEN = "0A"  # socket state column of /proc/net/tcp


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a TCP socket listening on `port` (Linux /proc).

    A connection test alone cannot tell our peer from a stranger that took the port
    between `free_port` and the peer's bind.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == _TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if str(fd.readlink()) in inodes:
                return True
        except OSError:
            continue  # closed since listed
    return False


def wait_for_port(
    port: int,
    *,
    host: str = LOOPBACK,
    timeout: float = 10.0,
    alive: Callable[[], bool] | None = None,
    pid: int | None = None,
) -> None:
    """Poll until `host:port` accepts a connection (and, given `pid`, that it is pid's).

    `alive` lets the caller stop waiting as soon as the peer that should listen has died,
    instead of burning the whole timeout.
    """

    def ready() -> bool:
        if alive is not None and not alive():
            raise PeerStartError(f"the process meant to listen on {host}:{port} exited")
        if pid is not None and not listens(pid, port):
            return False
        return port_accepts(port, host)

    poll_until(ready, timeout=timeout, what=f"{host}:{port} to accept connections")
