"""Every refusal of a peer, with one reason code: one log event, one count.

A refusal that leaves no trace is a sender that silently cannot deliver. Whatever part
of the DICOM layer refuses (the SCP's handlers, the socket guard, the pending-connection
watchdog, the C-STORE serving) reports it here, so each refusal logs exactly one event
with the peer and the reason and is counted once (``dicomnode_refusals_total`` in
``/metrics``, by reason; the node passes the counter in).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from dicomnode.logs import get_logger

log = get_logger(__name__)


class Reason(StrEnum):
    """Why a peer was refused: a stable label for logs and metrics."""

    CALLED_AE_TITLE = "called_ae_title"  # A-ASSOCIATE-RQ for another AE title
    CALLER_NOT_ALLOWED = "caller_not_allowed"  # calling AE title or host not in callers
    ASSOCIATION_LIMIT = "association_limit"  # node.max_associations established already
    PDU_TOO_LONG = "pdu_too_long"  # longer than node.max_pdu_bytes (P-DATA-TF) or 1 MiB
    NEGOTIATION_TIMEOUT = "negotiation_timeout"  # no association within the request timeout
    TOO_MANY_PENDING = "too_many_pending"  # node.max_pending_per_host from one address
    MALFORMED_REQUEST = "malformed_request"  # a first PDU that is no valid A-ASSOCIATE-RQ
    DATASET_REFUSED = "dataset_refused"  # the store stage refused the instance (0xA9xx...)
    DATASET_TOO_LARGE = "dataset_too_large"  # over node.max_dataset_bytes
    MEMORY_LIMIT = "memory_limit"  # node.max_buffered_bytes held by all associations
    TLS_HANDSHAKE = "tls_handshake"  # a TLS handshake that failed or did not finish in time
    TLS_ON_PLAIN_PORT = "tls_on_plain_port"  # a TLS ClientHello on the plain DICOM port


RefusalCounter = Callable[[str], None]


def _uncounted(_reason: str) -> None:
    return None


class Refusals:
    """Where the DICOM layer reports refusals: a warning event and the counter."""

    def __init__(self, count: RefusalCounter | None = None) -> None:
        self._count = count or _uncounted

    def report(
        self, event: str, reason: Reason, peer_ae: str, peer_host: str, **fields: Any
    ) -> None:
        """Log ``event`` (snake_case, past tense) with the peer and ``reason``; count it."""
        log.warning(event, reason=reason.value, peer_ae=peer_ae, peer_host=peer_host, **fields)
        self._count(reason.value)

    def count(self, reason: Reason) -> None:
        """Count a refusal whose event another part already logged (``instance_rejected``)."""
        self._count(reason.value)
