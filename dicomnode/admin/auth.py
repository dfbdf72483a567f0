"""Who may use the admin API, and for what: bearer tokens with a role.

Without a token the API is open, which ``access.check_admin_security`` allows only on a
loopback address. ``/healthz`` and ``/readyz`` never need a token (probes and load
balancers cannot send one); ``/metrics`` needs one unless it is made public.

Roles: a ``viewer`` token reads (every GET, and the two POSTs that change nothing: a rule
file's check and a dry run); an ``admin`` token also saves rules, retries jobs and
routing, and runs C-ECHO. A request the token's role does not cover is 403; a missing
or wrong token is 401 (RFC 6750 3.1). A route declares that viewers may use it with
``openapi_extra=VIEWERS_MAY``; any other route that is not a GET needs an admin.

A wrong token (or a credential that is not a bearer token) is a failed authentication:
logged and audited with the client address and path, never the token, and counted per
client address (ratelimit.py); past the limit, that address gets 429. A request without
any token is only answered 401: that is what a browser opening the page sends first,
and it guesses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dicomnode.admin.access import AdminAccess
from dicomnode.admin.context import AdminContext
from dicomnode.admin.guards import SAFE_METHODS
from dicomnode.admin.ratelimit import AuthFailures
from dicomnode.admin.tokens import Role
from dicomnode.logs import get_logger

log = get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="an admin.tokens (or admin.token) token")
_ROLE_KEY = "x-dicomnode-role"
# For a route that is not a GET and changes nothing (``openapi_extra`` of the route).
VIEWERS_MAY: dict[str, Any] = {_ROLE_KEY: "viewer"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request was authenticated as: a token's name, or no one on an open API."""

    token: str | None
    role: Role


OPEN = Principal(None, "admin")


def require_token(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The request's principal; 429, 401 or 403 when it may not do what it asks.

    ``_credentials`` puts the bearer scheme into the OpenAPI document; the header is
    parsed here, to tell a missing token from a credential of another scheme.
    """
    access: AdminAccess = request.app.state.access
    principal = _authenticate(request, access) if access.tokens else OPEN
    request.state.principal = principal
    declared = getattr(request.scope.get("route"), "openapi_extra", None) or {}
    needed = declared.get(_ROLE_KEY) or ("viewer" if request.method in SAFE_METHODS else "admin")
    if needed == "admin":
        require_admin(request, "this change")
    return principal


def require_admin(request: Request, what: str) -> None:
    """403 unless the request's token has the admin role."""
    principal: Principal = getattr(request.state, "principal", OPEN)
    if principal.role != "admin":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"the token {principal.token!r} is a viewer's; {what} needs an admin token",
        )


def _authenticate(request: Request, access: AdminAccess) -> Principal:
    failures: AuthFailures = request.app.state.auth_failures
    client = request.client.host if request.client is not None else "unknown"
    wait = failures.retry_after(client, time.monotonic())
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed authentications from {client}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
    if not scheme:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    credential = access.tokens.match(presented.strip()) if scheme.lower() == "bearer" else None
    if credential is None:
        reason = "invalid token" if scheme.lower() == "bearer" else f"{scheme[:20]} credentials"
        _failed(request, failures, client, reason)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the token is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return Principal(credential.name, credential.role)


def _failed(request: Request, failures: AuthFailures, client: str, reason: str) -> None:
    """Log, audit and count one failed authentication (never the credential itself)."""
    context: AdminContext = request.app.state.context
    path = request.url.path[:256]
    log.warning("admin_auth_failed", client=client, path=path, reason=reason)
    at = context.services.clock()
    context.audit.record(
        at, client, "auth.failed", path, {"method": request.method, "reason": reason}
    )
    if failures.fail(client, time.monotonic()):
        access: AdminAccess = request.app.state.access
        limit, window = access.max_auth_failures, access.auth_failure_window_seconds
        log.warning("admin_auth_locked_out", client=client, failures=limit, window_s=window)
        context.audit.record(
            at, client, "auth.locked_out", path, {"failures": limit, "window_seconds": window}
        )


def actor_of(request: Request) -> str:
    """Who made a change, for the audit: the ``X-Actor`` header, else ``api``.

    A token proves only which token was used (``audit_detail``); the header is what the
    web page or a script says about its user, kept next to that.
    """
    raw = request.headers.get("x-actor", "")
    cleaned = "".join(ch for ch in raw if ch.isprintable()).strip()[:128]
    return cleaned or "api"


def audit_detail(request: Request) -> dict[str, str]:
    """The token a change was made with, for its audit entry (nothing on an open API)."""
    principal: Principal = getattr(request.state, "principal", OPEN)
    if principal.token is None:
        return {}
    return {"token": principal.token, "role": principal.role}
