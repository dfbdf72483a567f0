"""ASGI middleware that refuses a request before any route sees it, with or without a token.

::

    HostGuard       421  a Host the node does not answer to (DNS rebinding, hosts.py)
    BodySizeGuard   413  a body over admin.max_body_bytes: its Content-Length, or the
                         bytes of a streamed (chunked) one as they are read
    CrossSiteGuard  403  a change requested by another site: a foreign Origin (``null``
                         included) or Sec-Fetch-Site cross-site / same-site
                    415  a change whose Content-Type is not application/json

Why the last two: a web page the administrator visits may send a POST to the node, and
the browser sends it without asking the node first when it is a form or ``text/plain``
(a CORS "simple request"); the page cannot read the answer, but the change would be
done. A JSON body needs a preflight the node never grants, and browsers name the
sending page in ``Origin``. A request without ``Origin`` (curl, scripts) is allowed:
browsers send it on every POST, PUT, PATCH and DELETE. A token does not exempt a
request, since the page gets to use one only if it can make the browser send it.

Every refusal is a JSON ``{"detail": ...}`` naming what to change.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomnode.admin.hosts import AllowedHosts, split_host

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HostGuard:
    """421 for a request whose ``Host`` is not allowed; none at all is allowed (HTTP/1.0
    scripts; a browser, the only tool of a rebinding attack, always sends one)."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = header(scope, b"host")
            if host is not None and not self.allowed.allows(host):
                await refuse(
                    send,
                    421,
                    f"this node does not answer to the name {_shown(host)!r}; if it should, "
                    "add the name to admin.allowed_hosts",
                )
                return
        await self.app(scope, receive, send)


class BodySizeGuard:
    """413 for a body over ``limit`` bytes: declared (before any route runs) or streamed
    (counted as the route reads it)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = HTTPException(
            413, f"the request body is larger than admin.max_body_bytes ({self.limit})"
        )
        length = (header(scope, b"content-length") or "").strip()
        if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > self.limit):
            await refuse(send, 413, too_large.detail)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI answers an HTTPException raised while it reads the body.
                    raise too_large
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:
            if exc is not too_large or started:
                raise
            await refuse(send, 413, too_large.detail)


class CrossSiteGuard:
    """403 for a change another site asks for; 415 for one whose body is not JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = _cross_site(scope)
            if refusal is not None:
                await refuse(send, 403, refusal)
                return
            media_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if media_type != "application/json":
                await refuse(
                    send,
                    415,
                    "a change needs Content-Type: application/json (even without a body); "
                    f"this request sent {_shown(media_type) or 'none'}",
                )
                return
        await self.app(scope, receive, send)


def _cross_site(scope: Scope) -> str | None:
    """Why the request comes from another site, or None."""
    fetch_site = (header(scope, b"sec-fetch-site") or "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"the browser says another site ({fetch_site}) sent this request"
    origin = header(scope, b"origin")
    if origin is not None and not _same_origin(origin.strip(), scope):
        return (
            f"a change requested by the page of another origin ({_shown(origin)!r}); "
            "use the node's own page, or a client that sends no Origin"
        )
    return None


def _same_origin(origin: str, scope: Scope) -> bool:
    """Whether ``Origin`` names the scheme, host and port this request was sent to."""
    host = header(scope, b"host")
    if host is None or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    scheme = str(scope.get("scheme", "http"))
    if parts.scheme != scheme or not parts.hostname or parts.path or parts.query:
        return False
    name, port = split_host(host)
    return parts.hostname.rstrip(".") == name and (
        origin_port or _DEFAULT_PORTS.get(parts.scheme)
    ) == (port or _DEFAULT_PORTS[scheme])


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (Latin-1, as HTTP/1.1 carries it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def refuse(send: Send, status: int, detail: str) -> None:
    """Answer ``{"detail": ...}`` with ``status``; the connection is not kept (the
    request's body, if any, was not read)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _shown(value: str) -> str:
    """A header value fit to quote back: printable and short."""
    return "".join(ch for ch in value[:100] if ch.isprintable())
