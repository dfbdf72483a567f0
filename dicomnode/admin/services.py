"""What the admin API needs from a running node, handed over by the composition root.

The app never imports ``dicomnode.node``: the node builds an ``AdminServices`` from its
parts, and tests build one from a real ``Node`` the same way, so what is tested is what
serves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dicomnode.admin.counters import ReceiveCounters
from dicomnode.admin.health import DiskWatermark
from dicomnode.config import Destination, DicomwebDestination
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.dicomweb import WebSettings, qido_echo
from dicomnode.dicom.scu import EchoResult, ScuSettings, echo
from dicomnode.outbox.queue import OutboxQueue
from dicomnode.pipeline.jobs import JobQueue
from dicomnode.results.provenance import Provenance
from dicomnode.routing.live_rules import LiveRules
from dicomnode.store.completion import utc_now
from dicomnode.store.database import Database
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool

Echo = Callable[[DicomAddress, ScuSettings], EchoResult]
WebEcho = Callable[[WebSettings], float]  # a QIDO-RS check: seconds, or PeerError


@dataclass(frozen=True, slots=True)
class AdminServices:
    """The node's parts the API reads and steers.

    ``decisions`` is ``Router.decisions``; ``scp_listening`` says whether the DICOM
    listener accepts connections; ``wake_sends``, ``wake_jobs`` and ``wake_routing`` let
    a retry start at once instead of at the workers' next poll; ``dicom_port`` and
    ``started_at`` are for the dashboard.
    """

    database: Database
    index: Index
    spool: Spool
    jobs: JobQueue
    sends: OutboxQueue
    rules: LiveRules
    decisions: Callable[[int], list[dict[str, Any]]]
    destinations: Mapping[str, Destination | DicomwebDestination]
    pipelines: Collection[str]
    calling_ae: str
    scp_listening: Callable[[], bool]
    disk: DiskWatermark
    counters: ReceiveCounters | None = None  # refusals and duplicates, when the node counts them
    wake_sends: Callable[[str], None] = lambda _destination: None
    wake_jobs: Callable[[], None] = lambda: None
    wake_routing: Callable[[], None] = lambda: None  # ``Router.notify``: route a re-route now
    clock: Callable[[], datetime] = utc_now
    dicom_port: Callable[[], int | None] = lambda: None  # the port the listener is bound to
    dicom_tls_port: Callable[[], int | None] = lambda: None  # the DICOM-TLS listener's
    started_at: datetime = field(default_factory=utc_now)
    echo: Echo = field(default=echo)
    web_echo: WebEcho = field(default=qido_echo)  # a DICOMweb destination's check
    # This node in its cluster (docs/scaling.md): its id, roles and lease length.
    node_id: str = "local"
    roles: tuple[str, ...] = ("receive", "route", "pipeline", "send")
    lease_seconds: float = 30.0
    # A pipeline's provenance as this node runs it now (model and definition hashes):
    # what ending shadow mode checks an evaluation report against. None: not known.
    provenance: Callable[[str], Provenance] | None = None
