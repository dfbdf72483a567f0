"""The administrator's side of a node: the HTTP API, metrics and the audit trail.

::

    services.py   AdminServices: the node's parts the API needs (built by node.py)
    app.py        create_app(services, token) -> FastAPI; routes/ holds one router per resource
    auth.py       the bearer token, check_admin_security, the audit actor
    schemas.py    request and response models (what the OpenAPI document says)
    jobs.py       pipeline jobs and sends as one list; timeline.py, their timelines
    rulefiles.py  validate and atomically write rule files; dry runs
    metrics.py    a per-node Prometheus registry computed from the database at scrape time
    counters.py   in-process counts of what leaves no row (refusals, duplicates)
    audit.py      AuditLog: the audit_log table, append-only
    health.py     readiness checks: SCP listening, database, disk high-water mark
    server.py     AdminServer: uvicorn on a thread

Layering: ``node`` imports ``admin``; ``admin`` imports the stages (routing, pipeline,
outbox, store, rules, dicom) and config, never ``node`` or ``cli``.
"""

from __future__ import annotations

from dicomnode.admin.app import create_app
from dicomnode.admin.audit import AuditEntry, AuditLog
from dicomnode.admin.auth import check_admin_security, read_token
from dicomnode.admin.counters import ReceiveCounters
from dicomnode.admin.health import DiskUsage, DiskWatermark, tcp_listening
from dicomnode.admin.server import AdminServer
from dicomnode.admin.services import AdminServices

__all__ = [
    "AdminServer",
    "AdminServices",
    "AuditEntry",
    "AuditLog",
    "DiskUsage",
    "DiskWatermark",
    "ReceiveCounters",
    "check_admin_security",
    "create_app",
    "read_token",
    "tcp_listening",
]
