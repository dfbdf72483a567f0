"""The admin app: FastAPI, built from the node's services by ``create_app``.

::

    /healthz, /readyz          no token (probes)
    /metrics                   token, unless metrics_public (Prometheus may not send one)
    /api/overview              token; the dashboard's counts and readiness
    /api/series[/{uid}]        token
    /api/jobs[/{id}[/retry]]   token; retry is audited
    /api/destinations          token; C-ECHO each
    /api/rules[/check|dry-run] token; PUT is validated, written, loaded and audited
    /api/audit                 token
    /openapi.json              no token (the API's shape is not a secret)
    /, /ui/, /ui/assets/...    no token: the web page (static code; its data comes from /api)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from dicomnode.admin.audit import AuditLog
from dicomnode.admin.auth import require_token
from dicomnode.admin.context import AdminContext
from dicomnode.admin.metrics import metrics_registry
from dicomnode.admin.routes import (
    audit,
    destinations,
    health,
    jobs,
    metrics,
    overview,
    rules,
    series,
)
from dicomnode.admin.rulefiles import RuleFiles
from dicomnode.admin.schemas import ErrorOut
from dicomnode.admin.services import AdminServices
from dicomnode.admin.web import mount_web

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token was sent"},
    403: {"model": ErrorOut, "description": "The bearer token is not valid"},
}


def create_app(
    services: AdminServices,
    token: str | None,
    *,
    metrics_public: bool = False,
    web: bool = True,
) -> FastAPI:
    """The admin API over ``services``; ``token=None`` leaves it open (loopback only).

    ``web`` adds the administrators' web page (``/ui/``), which only calls this API.
    """
    app = FastAPI(
        title="dicomnode admin API",
        version="1",
        summary="See and steer a dicomnode: series, jobs, destinations, rules, audit.",
        docs_url=None,  # Swagger UI loads from a CDN; the node must work offline
        redoc_url=None,
    )
    app.state.token = token
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
    ):
        protected.include_router(router)
    if metrics_public:
        app.include_router(metrics.router)
    else:
        protected.include_router(metrics.router)
    app.include_router(protected)
    if web:
        mount_web(app)
    return app
