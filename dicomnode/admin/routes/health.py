"""``/healthz`` and ``/readyz``: for probes and load balancers, so never behind the token."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dicomnode.admin.context import AdminContext, Context
from dicomnode.admin.health import database_problem
from dicomnode.admin.schemas import CheckOut, Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="The node can take studies: listener up, database reachable, disk below high water",
    responses={503: {"model": Readiness, "description": "Not ready; the checks say why"}},
)
def readyz(context: Context, response: Response) -> Readiness:
    readiness = check_readiness(context)
    if not readiness.ready:
        response.status_code = 503
    return readiness


def check_readiness(context: AdminContext) -> Readiness:
    services = context.services
    listening = services.scp_listening()
    checks = [
        CheckOut(
            name="scp",
            ok=listening,
            detail=None if listening else "the DICOM listener does not accept connections",
        )
    ]
    problem = database_problem(services.database)
    checks.append(CheckOut(name="database", ok=problem is None, detail=problem))
    try:
        usage = services.disk.usage()
    except OSError as exc:
        checks.append(CheckOut(name="disk", ok=False, detail=f"cannot read: {exc.strerror}"))
    else:
        free = f"{usage.free_bytes / 2**30:.1f} GiB free of {usage.total_bytes / 2**30:.1f} GiB"
        detail = f"above the high-water mark: {free}" if usage.above_high_water else free
        checks.append(CheckOut(name="disk", ok=not usage.above_high_water, detail=detail))
    return Readiness(ready=all(check.ok for check in checks), checks=checks)
