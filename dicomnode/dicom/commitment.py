"""Storage Commitment Push Model (PS3.4 Annex J), the requester's side.

The node asks by N-ACTION (action type 1) which instances the destination commits to
keeping; the answer is an N-EVENT-REPORT (event type 1: all committed, 2: some failed),
which the destination may send on the same association or, usually, on a new one to our
SCP. Both land in :func:`parse_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import ScuSettings, _associate, _make_ae
from dicomnode.errors import PeerError
from dicomnode.logs import get_logger

log = get_logger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs


@dataclass(frozen=True, slots=True)
class CommitmentReport:
    """One N-EVENT-REPORT: the transaction, committed UIDs, failed UIDs with reasons."""

    transaction_uid: str
    committed: tuple[str, ...]
    failed: tuple[tuple[str, int], ...]  # (SOP Instance UID, FailureReason)


ReportSink = Callable[[CommitmentReport], None]


def new_transaction_uid() -> str:
    return str(generate_uid())


def parse_report(event_type: int, info: Dataset) -> CommitmentReport:
    """The report's content; event type 2 without a Failed SOP Sequence fails nothing."""
    committed = tuple(
        str(item.ReferencedSOPInstanceUID) for item in info.get("ReferencedSOPSequence", [])
    )
    failed = tuple(
        (str(item.ReferencedSOPInstanceUID), int(item.get("FailureReason", 0x0110)))
        for item in info.get("FailedSOPSequence", [])
    )
    if event_type not in (ALL_COMMITTED, SOME_FAILED):
        log.warning("commitment_event_type_unknown", event_type=event_type)
    return CommitmentReport(str(info.get("TransactionUID", "")), committed, failed)


def report_handler(sink: ReportSink) -> Callable[[Any], tuple[int, Dataset | None]]:
    """An ``EVT_N_EVENT_REPORT`` handler handing commitment reports to ``sink``."""

    def handle(event: Any) -> tuple[int, Dataset | None]:
        try:
            if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
                return 0x0112, None  # no such SOP instance: we serve no other N-EVENT
            sink(parse_report(int(event.event_type), event.event_information))
        except Exception:
            # The root of this DIMSE exchange: the peer hears a processing failure.
            log.exception("commitment_report_failed")
            return 0x0110, None
        return 0x0000, None

    return handle


def request_commitment(
    address: DicomAddress,
    settings: ScuSettings,
    transaction_uid: str,
    references: Sequence[tuple[str, str]],
    sink: ReportSink,
) -> None:
    """N-ACTION the request for ``references`` ((SOP Class, SOP Instance) UIDs).

    A report the peer sends before we release goes to ``sink``; PeerError when the
    request is not accepted (association, context or a failure status).
    """
    ae = _make_ae(settings)
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
    assoc = _associate(ae, address, settings)
    if not assoc.is_established:
        raise PeerError(f"{address}: Storage Commitment Push Model not accepted")
    assoc.bind(evt.EVT_N_EVENT_REPORT, report_handler(sink))
    request = Dataset()
    request.TransactionUID = transaction_uid
    sequence = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        sequence.append(item)
    request.ReferencedSOPSequence = sequence
    try:
        status, _reply = assoc.send_n_action(
            request,
            REQUEST_STORAGE_COMMITMENT,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_INSTANCE,
        )
    finally:
        if assoc.is_established:
            assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code != 0x0000:
        shown = "no response" if code < 0 else f"status 0x{code:04X}"
        raise PeerError(f"{address}: storage commitment request refused ({shown})")
