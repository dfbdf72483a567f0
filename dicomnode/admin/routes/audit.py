"""``/api/audit``: who changed what through the API or the CLI, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dicomnode.admin.context import Context
from dicomnode.admin.schemas import AuditOut, AuditQuery

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", summary="Audit entries, newest first")
def list_audit(context: Context, query: Annotated[AuditQuery, Query()]) -> list[AuditOut]:
    entries = context.audit.entries(
        action=query.action, actor=query.actor, target=query.target, limit=query.limit
    )
    return [
        AuditOut(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, detail=e.detail)
        for e in entries
    ]
