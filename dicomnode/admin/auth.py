"""Who may use the admin API: one bearer token, compared in constant time.

Without a token the API is open, which is allowed only on a loopback address: there,
only local users reach it. ``check_admin_security`` refuses any other host without a
token before the node starts. ``/healthz`` and ``/readyz`` never need the token (probes
and load balancers cannot send one); ``/metrics`` needs it unless it is made public.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dicomnode.errors import ConfigError

_bearer = HTTPBearer(auto_error=False, description="the node's admin.token")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_security(host: str, token: str | None) -> None:
    """Refuse an admin API without a token on an address other machines can reach."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"admin.host is {host!r}, which other machines can reach, and no admin token "
            "is configured: set admin.token or admin.token_file, or keep admin.host on "
            "127.0.0.1"
        )


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The configured token: given inline or read from a file (surrounding space stripped)."""
    if token is not None and token_file is not None:
        raise ConfigError("admin: give admin.token or admin.token_file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"admin.token_file: cannot read {token_file}: {reason}") from exc
        where = f"admin.token_file {token_file}"
    else:
        where = "admin.token"
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise ConfigError(f"{where}: the token is empty")
    return token


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without credentials, 403 with the wrong ones; nothing when no token is set."""
    expected: str | None = request.app.state.token
    if expected is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a bearer token is required", headers=_CHALLENGE
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the token is not valid")


def actor_of(request: Request) -> str:
    """Who made a change, for the audit: the ``X-Actor`` header, else ``api``.

    With a single shared token the API cannot prove who someone is; the header is what
    the web page or a script says about its user, kept next to the fact that the token
    was valid.
    """
    raw = request.headers.get("x-actor", "")
    cleaned = "".join(ch for ch in raw if ch.isprintable()).strip()[:128]
    return cleaned or "api"
