"""What every request handler receives: the node's services and the admin's own parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from dicomnode.admin.audit import AuditLog
from dicomnode.admin.rulefiles import RuleFiles
from dicomnode.admin.services import AdminServices


@dataclass(frozen=True, slots=True)
class AdminContext:
    services: AdminServices
    audit: AuditLog
    rule_files: RuleFiles
    registry: CollectorRegistry


def _context(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.context
    return context


Context = Annotated[AdminContext, Depends(_context)]
