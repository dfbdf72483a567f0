"""The admin app: FastAPI, built from the node's services by ``create_app``.

::

    /healthz, /readyz          no token (probes)
    /metrics                   token, unless metrics_public (Prometheus may not send one)
    /api/overview              token; the dashboard's counts and readiness
    /api/series[/{uid}]        token; retry-routing: admin, audited
    /api/jobs[/{id}[/retry]]   token; retry: admin, audited
    /api/destinations          token; echo=true (a C-ECHO each): admin
    /api/rules[/check|dry-run] token; PUT (validated, written, loaded, audited): admin
    /api/audit                 token
    /api/shadow[/compare]      token; /{rule}/end (on an evaluation report, audited): admin
    /openapi.json              no token (the API's shape is not a secret)
    /, /ui/, /ui/assets/...    no token: the web page (static code; its data comes from /api)

"token" is any configured token, viewer or admin (auth.py). Before any route, every
request passes the guards (guards.py): its Host, its declared size, and for a change,
its Origin and content type.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from dicomnode.admin.access import AdminAccess
from dicomnode.admin.audit import AuditLog
from dicomnode.admin.auth import require_token
from dicomnode.admin.context import AdminContext
from dicomnode.admin.guards import BodySizeGuard, CrossSiteGuard, HostGuard
from dicomnode.admin.metrics import metrics_registry
from dicomnode.admin.ratelimit import AuthFailures
from dicomnode.admin.routes import (
    audit,
    cluster,
    destinations,
    health,
    jobs,
    metrics,
    overview,
    rules,
    series,
    shadow,
)
from dicomnode.admin.rulefiles import RuleFiles
from dicomnode.admin.schemas import ErrorOut
from dicomnode.admin.services import AdminServices
from dicomnode.admin.web import mount_web

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token, or one that is not valid"},
    403: {"model": ErrorOut, "description": "The token's role (viewer) may not do this"},
    429: {
        "model": ErrorOut,
        "description": "Too many failed authentications from this address (Retry-After)",
    },
}


def create_app(
    services: AdminServices,
    access: AdminAccess | None = None,
    *,
    metrics_public: bool = False,
    web: bool = True,
) -> FastAPI:
    """The admin API over ``services``; ``access=None``: open, on loopback names only.

    ``web`` adds the administrators' web page (``/ui/``), which only calls this API.
    """
    access = access or AdminAccess()
    app = FastAPI(
        title="dicomnode admin API",
        version="1",
        summary="See and steer a dicomnode: series, jobs, destinations, rules, audit.",
        docs_url=None,  # Swagger UI loads from a CDN; the node must work offline
        redoc_url=None,
    )
    app.state.access = access
    app.state.auth_failures = AuthFailures(
        access.max_auth_failures, access.auth_failure_window_seconds
    )
    app.state.context = AdminContext(
        services=services,
        audit=AuditLog(services.database),
        rule_files=RuleFiles(services.rules.folder, services.destinations, services.pipelines),
        registry=metrics_registry(services),
    )
    app.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_token)], responses=_AUTH_RESPONSES)
    for router in (
        overview.router,
        series.router,
        jobs.router,
        destinations.router,
        rules.router,
        audit.router,
        cluster.router,
        shadow.router,
    ):
        protected.include_router(router)
    if metrics_public:
        app.include_router(metrics.router)
    else:
        protected.include_router(metrics.router)
    app.include_router(protected)
    # Innermost, so that what it raises while FastAPI reads a body reaches FastAPI as it
    # is (the page's header middleware would wrap it in an exception group).
    app.add_middleware(BodySizeGuard, limit=access.max_body_bytes)
    if web:
        mount_web(app)
    # The last added runs first: a foreign Host is refused before anything else.
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(HostGuard, allowed=access.allowed_hosts)
    return app
