"""The C-STORE / C-ECHO SCP: thin handlers that persist, answer and return.

The handler hands the dataset bytes to an ``InstanceSink`` (the store stage) and turns
the outcome into a named DIMSE status (PS3.4 Annex B.2.3). It never decodes pixel data,
routes or sends: all of that happens later, off the association thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import NodeConfig
from dicomnode.dicom import contexts, sockets
from dicomnode.dicom.adapt import direct
from dicomnode.dicom.status import Status
from dicomnode.domain import Peer, ReceivedInstance, StoredInstance
from dicomnode.errors import (
    InstanceError,
    StorageError,
    UIDMismatchError,
)
from dicomnode.logs import get_logger

log = get_logger(__name__)

# PS3.8 9.3.4: A-ASSOCIATE-RJ result, source, reason.
_REJECT_PERMANENT, _SOURCE_USER = 0x01, 0x01
_CALLING_AE_NOT_RECOGNISED = 0x03


class InstanceSink(Protocol):
    """What the SCP needs from the store stage."""

    def association_opened(self, peer: Peer) -> int: ...

    def association_closed(self, association_id: int, released: bool) -> None: ...

    def store(self, instance: ReceivedInstance) -> StoredInstance: ...


CallerPolicy = Callable[[str, str], bool]


class StorageSCP:
    """A pynetdicom server accepting every storage SOP class and Verification."""

    def __init__(self, config: NodeConfig, allows_caller: CallerPolicy, sink: InstanceSink) -> None:
        sockets.apply_library_settings()
        self._config = config
        self._allows_caller = allows_caller
        self._sink = sink
        self._associations: dict[Association, tuple[int, Peer]] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._ae = self._make_ae()

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._config.ae_title)
        # Storage contexts are negotiated by pynetdicom's unrestricted storage service
        # (sockets.apply_library_settings): every storage SOP class, private ones too, in
        # the syntax the sender proposes. Listing the 170 classes x 45 syntaxes here would
        # only make pynetdicom deep-copy them for every association (~0.1 s each).
        ae.add_supported_context(contexts.VERIFICATION_SOP_CLASS, list(contexts.TRANSFER_SYNTAXES))
        ae.require_called_aet = True
        ae.maximum_associations = self._config.max_associations
        ae.maximum_pdu_size = self._config.max_pdu_bytes
        ae.network_timeout = self._config.idle_timeout_seconds
        ae.acse_timeout = self._config.acse_timeout_seconds
        ae.dimse_timeout = self._config.dimse_timeout_seconds
        if direct.installed():
            direct.serve_stores(ae, self._store)
        return ae

    @property
    def port(self) -> int:
        """The bound port (useful when the configuration asked for port 0)."""
        if self._server is None:
            return self._config.port
        return int(self._server.server_address[1])

    @property
    def listening(self) -> bool:
        """Whether the listener is up (checked without connecting to it)."""
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() >= 0

    def start(self) -> None:
        """Start listening; returns once the socket is bound."""
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, sockets.tune, [self._config.idle_timeout_seconds]),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        self._server = self._ae.start_server(
            (self._config.host, self._config.port), block=False, evt_handlers=handlers
        )
        log.info(
            "scp_listening",
            ae_title=self._config.ae_title,
            host=self._config.host,
            port=self.port,
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let open associations finish for ``grace_seconds``, then abort."""
        server = self._server
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace_seconds
        # Only established associations can be mid-store; a connection still waiting
        # for its A-ASSOCIATE-RQ (or already dead) would otherwise hold us for acse_timeout.
        while time.monotonic() < deadline and any(
            assoc.is_established for assoc in server.active_associations
        ):
            time.sleep(0.05)
        for assoc in server.active_associations:
            assoc.abort()
        server.server_close()
        self._server = None
        log.info("scp_stopped")

    # -- handlers: each catches broadly, because it is the root of its thread ----------

    def _on_requested(self, event: Event) -> None:
        requestor = event.assoc.requestor
        # The requestor's AE title is filled in only after this event; read the PDU's.
        calling = str(getattr(requestor.primitive, "calling_ae_title", "") or "").strip()
        if self._allows_caller(calling, str(requestor.address)):
            return
        event.assoc.acse.send_reject(_REJECT_PERMANENT, _SOURCE_USER, _CALLING_AE_NOT_RECOGNISED)
        # As pynetdicom does after its own rejections: wait for the PDU to go out.
        event.assoc.kill()
        log.warning(
            "association_rejected",
            peer_ae=calling,
            peer_host=requestor.address,
            reason="calling AE title or host not in callers",
        )

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        peer = _peer_of(assoc)
        try:
            association_id = self._sink.association_opened(peer)
        except Exception:
            log.exception(
                "association_aborted", peer_ae=peer.calling_ae, reason="index unavailable"
            )
            assoc.abort()
            return
        with self._lock:
            self._associations[assoc] = (association_id, peer)
        log.info(
            "association_accepted",
            association_id=association_id,
            peer_ae=peer.calling_ae,
            peer_host=peer.host,
            called_ae=peer.called_ae,
        )

    def _on_store(self, event: Event) -> Dataset:
        """EVT_C_STORE, for the requests pynetdicom serves itself (see ``direct``)."""
        request = cast(C_STORE, event.request)
        status, comment = self._store(
            event.assoc,
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            str(event.context.transfer_syntax),
            cast(BytesIO, request.DataSet).getbuffer(),
        )
        return _status(status, comment)

    def _store(
        self,
        assoc: Association,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        dataset: memoryview,
    ) -> tuple[int, str | None]:
        """Store one request's dataset; the DIMSE status and error comment to answer."""
        with self._lock:
            association_id, peer = self._associations.get(assoc) or (0, _peer_of(assoc))
        instance = ReceivedInstance(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            dataset=dataset,
            peer=peer,
            association_id=association_id,
        )
        try:
            self._sink.store(instance)
        except UIDMismatchError as exc:
            return _reject(instance, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        except InstanceError as exc:
            return _reject(instance, Status.CANNOT_UNDERSTAND, str(exc))
        except StorageError as exc:
            return _reject(instance, Status.OUT_OF_RESOURCES, str(exc))
        except Exception:
            log.exception("instance_rejected", association_id=association_id, status="0xA700")
            return Status.OUT_OF_RESOURCES, "internal error while storing"
        return Status.SUCCESS, None

    def _on_echo(self, _event: Event) -> int:
        return int(Status.SUCCESS)

    def _on_released(self, event: Event) -> None:
        self._close(event.assoc, released=True)

    def _on_aborted(self, event: Event) -> None:
        self._close(event.assoc, released=False)

    def _on_closed(self, event: Event) -> None:
        # A connection that ends without release or abort (timeout, peer vanished).
        self._close(event.assoc, released=False)

    def _close(self, assoc: Association, released: bool) -> None:
        with self._lock:
            opened = self._associations.pop(assoc, None)
        if opened is None:
            return
        association_id = opened[0]
        try:
            self._sink.association_closed(association_id, released)
        except Exception:
            log.exception("association_close_failed", association_id=association_id)
        log.info(
            "association_released" if released else "association_aborted",
            association_id=association_id,
            peer_ae=str(assoc.requestor.ae_title).strip(),
        )


def _peer_of(assoc: Association) -> Peer:
    primitive = assoc.requestor.primitive
    called = str(getattr(primitive, "called_ae_title", "") or assoc.acceptor.ae_title)
    return Peer(
        calling_ae=str(assoc.requestor.ae_title).strip(),
        called_ae=called.strip(),
        host=str(assoc.requestor.address),
        port=int(assoc.requestor.port),
    )


def _status(status: int, comment: str | None = None) -> Dataset:
    response = Dataset()
    response.Status = int(status)
    if comment:
        response.ErrorComment = comment
    return response


def _reject(instance: ReceivedInstance, status: Status, reason: str) -> tuple[int, str]:
    log.warning(
        "instance_rejected",
        association_id=instance.association_id,
        peer_ae=instance.peer.calling_ae,
        sop_class_uid=instance.sop_class_uid,
        status=f"0x{int(status):04X}",
        reason=reason,
    )
    # (0000,0902) Error Comment is LO: at most 64 characters.
    return status, reason[:64]
