"""The ``Host`` header allowlist: the defence against DNS rebinding.

A web page at ``http://evil.example`` can make its own name resolve to 127.0.0.1 a
moment later; the browser then lets that page read the node's answers, since they seem
to come from the page's own origin. What gives it away is the ``Host`` header, which
still says ``evil.example``. So the API answers only requests addressed to a name it
knows: ``admin.allowed_hosts`` plus ``localhost`` and the bound address, or, when that
setting is left out, also this machine's host name and fully qualified name. An IP
literal is always accepted: an attacker's page cannot have an IP address as its name
and still point it at this node. ``*.example.org`` accepts the subdomains of a domain;
``*`` turns the check off (only behind a proxy that checks the name itself).

``guards.HostGuard`` answers anything else 421 Misdirected Request (RFC 9110 15.5.20).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Names (lowercase, without a trailing dot) and ``*.domain`` patterns served."""

    names: frozenset[str]
    any: bool = False

    @classmethod
    def of(cls, configured: Iterable[str] | None, bound: str) -> AllowedHosts:
        """``admin.allowed_hosts`` (None: this machine's names) and the bound address."""
        names = {*LOOPBACK_NAMES, bound}
        names.update(this_machine() if configured is None else configured)
        normalised = frozenset(_normal(name) for name in names if name)
        return cls(normalised - {"*"}, any="*" in normalised)

    def allows(self, host: str) -> bool:
        """Whether a ``Host`` header value (with or without its port) is served."""
        name = split_host(host)[0]
        if self.any or name in self.names or is_ip_literal(name):
            return True
        return any(p.startswith("*.") and name.endswith(p[1:]) for p in self.names)


def split_host(host: str) -> tuple[str, int | None]:
    """``name[:port]`` or ``[v6]:port`` -> (lowercase name without brackets, port)."""
    host = host.strip().lower()
    if host.startswith("[") and "]" in host:
        name, _, rest = host[1:].partition("]")
        return name, _port(rest[1:]) if rest.startswith(":") else None
    name, colon, tail = host.rpartition(":")
    port = _port(tail) if colon and ":" not in name else None
    if port is not None:
        return name.rstrip("."), port
    return host.rstrip("."), None


def _port(text: str) -> int | None:
    # ASCII digits only: a Host header is decoded as Latin-1, where "²" is a digit too.
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        return int(text)
    return None


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@cache
def this_machine() -> tuple[str, ...]:
    """This machine's host name and fully qualified name (looked up once)."""
    hostname = socket.gethostname()
    return (hostname, socket.getfqdn(hostname))


def _normal(name: str) -> str:
    return split_host(name)[0] if not name.startswith("*") else name.strip().lower().rstrip(".")
