"""``/api/overview``: the dashboard's first answer, in one request.

The node, its readiness (the same checks as ``/readyz``), the rules in force, and how
many series, pipeline jobs and sends are in each state, so that an operator sees at a
glance whether anything needs attention.
"""

from __future__ import annotations

from fastapi import APIRouter

from dicomnode import __version__
from dicomnode.admin import queries
from dicomnode.admin.context import Context
from dicomnode.admin.routes.health import check_readiness
from dicomnode.admin.schemas import NodeOut, Overview

router = APIRouter(prefix="/api/overview", tags=["overview"])


@router.get("", summary="The node, its readiness, the rules in force and counts by state")
def overview(context: Context) -> Overview:
    services = context.services
    ruleset = services.rules.current
    counts = queries.counts_by_state(services.database)
    return Overview(
        node=NodeOut(
            ae_title=services.calling_ae,
            dicom_port=services.dicom_port(),
            dicom_tls_port=services.dicom_tls_port(),
            version=__version__,
            started_at=services.started_at,
            node_id=services.node_id,
            roles=list(services.roles),
        ),
        readiness=check_readiness(context),
        rules_version=ruleset.version,
        rules_count=len(ruleset),
        rules_last_rejection=services.rules.last_rejection,
        series=counts["series"],
        pipeline_jobs=counts["pipeline_jobs"],
        sends=counts["sends"],
    )
