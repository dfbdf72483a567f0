"""Races that pynetdicom's polling loops hid and its event-driven replacement must not show."""

from __future__ import annotations

from pynetdicom import AE

from dicomnode.dicom import adapt
from dicomnode.dicom.adapt import reactor
from dicomnode.dicom.sockets import apply_library_settings
from dicomnode.testing.storescp import StoreSCP

VERIFICATION = "1.2.840.10008.1.1"


def test_a_peer_that_rejects_and_hangs_up_is_a_rejection_every_time() -> None:
    """storescp --refuse sends A-ASSOCIATE-RJ and closes at once. Before the fix the
    requestor saw the socket closed before it had looked at the answer, and reported an
    abort about one time in six (a temporary failure, retried, instead of a permanent one)."""
    apply_library_settings()
    assert reactor.installed() == adapt.adaptable()
    outcomes: dict[str, int] = {}
    with StoreSCP(ae_title="NO", extra_args=["--refuse"]) as refusing:
        for _ in range(40):
            ae = AE(ae_title="PROBE")
            ae.add_requested_context(VERIFICATION)
            association = ae.associate(refusing.host, refusing.port, ae_title="NO")
            outcome = (
                "rejected"
                if association.is_rejected
                else "aborted"
                if association.is_aborted
                else "other"
            )
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == {"rejected": 40}
