"""Failed authentications per client address, and the lock-out that follows too many.

After ``limit`` wrong tokens from one address within ``window`` seconds, that address is
refused (429) until the oldest of them leaves the window, even with a right token: were a
right token let through, the answer would tell a guesser when a guess is right. A success
does not clear the count, or a holder of a viewer token could reset it between guesses
at an admin token. IPv6 clients count per /64 (what one host or home usually holds).

Memory is bounded: at most ``max_addresses`` are tracked, the one that failed longest
ago is forgotten first. Used from the server's worker threads, hence the lock.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict, deque

MAX_ADDRESSES = 4096


class AuthFailures:
    """A sliding window of failure times per client address."""

    def __init__(self, limit: int, window: float, max_addresses: int = MAX_ADDRESSES) -> None:
        self._limit = limit
        self._window = window
        self._max = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str, now: float) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        with self._lock:
            times = self._recent(_key(address), now)
            if times is None or len(times) < self._limit:
                return None
            return max(1, math.ceil(times[0] + self._window - now))

    def fail(self, address: str, now: float) -> bool:
        """Count a failure; True if it is the one that starts a lock-out."""
        key = _key(address)
        with self._lock:
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self._limit)
                while len(self._failures) > self._max:
                    self._failures.popitem(last=False)
            times.append(now)
            self._failures.move_to_end(key)
            return len(times) == self._limit

    def tracked(self) -> int:
        """How many addresses are tracked now (bounded by ``max_addresses``)."""
        with self._lock:
            return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


def _key(address: str) -> str:
    """The address, or its /64 for IPv6; any other string (a test client) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
