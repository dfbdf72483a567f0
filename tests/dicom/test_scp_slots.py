"""An association slot belongs to a live association, whatever events were missed.

The fuzz test found, under load, broken PDU streams whose end never reached the SCP's
released/aborted/closed handlers; each held one of ``max_associations`` slots for good,
until every caller was rejected with "local limit exceeded". Here those handlers are
switched off, so every end goes unseen: the slots must still come back.
"""

from __future__ import annotations

from typing import Any

from dicomnode.config import NodeConfig
from dicomnode.dicom.scp import StorageSCP
from dicomnode.domain import Peer
from dicomnode.testing.hostile import echo_problem
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until


class _Sink:
    def __init__(self) -> None:
        self.closed: list[int] = []
        self.opened = 0

    def association_opened(self, peer: Peer) -> int:
        self.opened += 1
        return self.opened

    def association_closed(self, association_id: int, released: bool) -> None:
        self.closed.append(association_id)

    def store(self, instance: Any) -> Any:
        raise AssertionError("no C-STORE here")


def test_slots_of_associations_whose_end_went_unseen_come_back() -> None:
    sink = _Sink()
    scp = StorageSCP(
        NodeConfig(host=LOOPBACK, port=0, ae_title="DICOMNODE", max_associations=2),
        lambda _ae, _host, _subject: True,
        sink,
    )

    def unseen(_event: Any) -> None:
        return None

    for handler in ("_on_released", "_on_aborted", "_on_closed"):
        setattr(scp, handler, unseen)  # bound at start: every end goes unseen
    scp.start()
    try:
        assert scp.port is not None
        for _ in range(5):
            assert echo_problem(scp.port) is None
            poll_until(
                lambda: not any(a.is_alive() for a in scp._admitted),
                timeout=10,
                what="the association thread to end",
            )
        # Each unseen end was closed in the index when its slot was taken back.
        assert sink.opened == 5 and sorted(sink.closed) == [1, 2, 3, 4]
    finally:
        scp.stop()
