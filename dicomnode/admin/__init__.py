"""The administrator's side of a node: the HTTP API, metrics and the audit trail.

::

    services.py   AdminServices: the node's parts the API needs (built by node.py)
    app.py        create_app(services, access) -> FastAPI; routes/ holds one router per resource
    access.py     AdminAccess (tokens, allowed hosts, limits) from admin:, check_admin_security
    tokens.py     token files: read once, owner-only, compared in constant time; roles
    auth.py       the request's principal and role, 401/403/429, the audit actor
    ratelimit.py  failed authentications per client address
    hosts.py      the Host allowlist (DNS rebinding)
    guards.py     ASGI middleware: Host, body size, cross-site changes, JSON only
    https.py      admin.tls: the BCP 195 context, its certificate reloaded in place
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

from dicomnode.admin.access import AdminAccess, admin_access, check_admin_security
from dicomnode.admin.app import create_app
from dicomnode.admin.audit import AuditEntry, AuditLog
from dicomnode.admin.counters import ReceiveCounters
from dicomnode.admin.health import DiskUsage, DiskWatermark, tcp_listening
from dicomnode.admin.https import AdminHTTPS
from dicomnode.admin.server import AdminServer
from dicomnode.admin.services import AdminServices
from dicomnode.admin.tokens import Tokens, read_tokens

__all__ = [
    "AdminAccess",
    "AdminHTTPS",
    "AdminServer",
    "AdminServices",
    "AuditEntry",
    "AuditLog",
    "DiskUsage",
    "DiskWatermark",
    "ReceiveCounters",
    "Tokens",
    "admin_access",
    "check_admin_security",
    "create_app",
    "read_tokens",
    "tcp_listening",
]
