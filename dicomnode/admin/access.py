"""What the admin app lets in: its tokens, the names it answers to, its limits.

``admin_access`` builds it from ``admin:`` once, at start-up (``check_config``, which
``serve`` and ``config check`` share), so a token file anyone may read or a token that
does not load stops the node with the same message either way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dicomnode.admin.hosts import AllowedHosts
from dicomnode.admin.tokens import Tokens, read_tokens
from dicomnode.config import AdminConfig
from dicomnode.errors import ConfigError

_DEFAULTS = AdminConfig()


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """The admin API's access rules; the default is an open API on loopback."""

    tokens: Tokens = field(default_factory=Tokens)
    allowed_hosts: AllowedHosts = field(
        default_factory=lambda: AllowedHosts.of(None, _DEFAULTS.host)
    )
    max_body_bytes: int = _DEFAULTS.max_body_bytes
    max_auth_failures: int = _DEFAULTS.max_auth_failures
    auth_failure_window_seconds: float = _DEFAULTS.auth_failure_window_seconds


def admin_access(admin: AdminConfig) -> AdminAccess:
    """``admin:``'s access rules. Raises ConfigError (a token file others may read, no
    token on an address other machines reach, ...)."""
    tokens = read_tokens(admin)
    check_admin_security(admin.host, tokens)
    return AdminAccess(
        tokens=tokens,
        allowed_hosts=AllowedHosts.of(admin.allowed_hosts, admin.host),
        max_body_bytes=admin.max_body_bytes,
        max_auth_failures=admin.max_auth_failures,
        auth_failure_window_seconds=admin.auth_failure_window_seconds,
    )


def check_admin_security(host: str, tokens: Tokens) -> None:
    """Refuse an admin API without a token on an address other machines can reach.

    Without a token the API is open, which is allowed only on a loopback address: there,
    only local users reach it (and the Host allowlist keeps web pages out).
    """
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"admin.host is {host!r}, which other machines can reach, and no admin token "
            "is configured: set admin.tokens (or admin.token_file), or keep admin.host "
            "on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
