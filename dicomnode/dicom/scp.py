"""The C-STORE / C-ECHO SCP: thin handlers that persist, answer and return.

The handler hands the dataset bytes to an ``InstanceSink`` (the store stage) and turns
the outcome into a named DIMSE status (PS3.4 Annex B.2.3). It never decodes pixel data,
routes or sends: all of that happens later, off the association thread.

Against hostile or broken peers (docs/conformance.md): every connection reads through a
``guard`` (PDU lengths, the A-ASSOCIATE-RQ's structure), connections still negotiating are
``pending`` (capped per address, timed out), the association limit counts established
associations only, dataset bytes in memory are ``limits``-bound, and each refusal is
reported once to ``refusals`` (a log event and a count).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import NodeConfig
from dicomnode.dicom import adapt, contexts, sockets, tls
from dicomnode.dicom.adapt import cstore, direct
from dicomnode.dicom.commitment import STORAGE_COMMITMENT_PUSH_MODEL, ReportSink, report_handler
from dicomnode.dicom.guard import GuardedSocket, guarded
from dicomnode.dicom.limits import DatasetBudget, refusal_comment
from dicomnode.dicom.pending import PendingConnections
from dicomnode.dicom.refusals import Reason, RefusalCounter, Refusals
from dicomnode.dicom.status import Status
from dicomnode.domain import Peer, ReceivedInstance, StoredInstance
from dicomnode.errors import (
    ConfigError,
    InstanceError,
    StorageError,
    UIDMismatchError,
)
from dicomnode.logs import get_logger

log = get_logger(__name__)

# PS3.8 9.3.4: A-ASSOCIATE-RJ result, source, reason.
_REJECT_PERMANENT, _REJECT_TRANSIENT = 0x01, 0x02
_SOURCE_USER, _SOURCE_PRESENTATION = 0x01, 0x03
_CALLING_AE_NOT_RECOGNISED, _CALLED_AE_NOT_RECOGNISED = 0x03, 0x07
_LOCAL_LIMIT_EXCEEDED = 0x02  # with source 0x03
# pynetdicom counts every connection's thread against its own association limit, from
# connect to close; the node counts established associations itself (``_on_requested``)
# and leaves pynetdicom's count only as a bound on threads, this much higher.
_THREAD_HEADROOM = 64
_RAW = "_dicomnode_raw_socket"  # on an Association: the accepted socket (pending's key)
_SUBJECT = "_dicomnode_peer_subject"  # on an Association: its client certificate's subject


class InstanceSink(Protocol):
    """What the SCP needs from the store stage."""

    def association_opened(self, peer: Peer) -> int: ...

    def association_closed(self, association_id: int, released: bool) -> None: ...

    def store(self, instance: ReceivedInstance) -> StoredInstance: ...


# (calling AE title, host, verified client certificate subject or None)
CallerPolicy = Callable[[str, str, str | None], bool]


class StorageSCP:
    """A pynetdicom server accepting every storage SOP class and Verification."""

    def __init__(
        self,
        config: NodeConfig,
        allows_caller: CallerPolicy,
        sink: InstanceSink,
        count_refusal: RefusalCounter | None = None,
        commitment_reports: ReportSink | None = None,
    ) -> None:
        sockets.apply_library_settings()
        self._config = config
        # Storage commitment reports a destination sends back (N-EVENT-REPORT), if any.
        self._commitment_reports = commitment_reports
        self._allows_caller = allows_caller
        self._sink = sink
        self._refusals = Refusals(count_refusal)
        self._budget = DatasetBudget(config.max_dataset_bytes, config.max_buffered_bytes)
        self._pending = PendingConnections(
            config.max_pending_per_host, config.association_request_timeout_seconds, self._refusals
        )
        self._associations: dict[Association, tuple[int, Peer]] = {}
        self._admitted: set[Association] = set()  # past our checks: they hold a slot
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        # Built now, so a certificate that does not load stops start-up with its reason.
        self._tls = tls.ReloadingContext.for_listener(config.tls) if config.tls else None
        self._ae = self._make_ae()

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._config.ae_title)
        # Storage contexts are negotiated by pynetdicom's unrestricted storage service
        # (sockets.apply_library_settings): every storage SOP class, private ones too, in
        # the syntax the sender proposes. Listing the 170 classes x 45 syntaxes here would
        # only make pynetdicom deep-copy them for every association (~0.1 s each).
        ae.add_supported_context(contexts.VERIFICATION_SOP_CLASS, list(contexts.TRANSFER_SYNTAXES))
        if self._commitment_reports is not None:
            # A destination answers our storage commitment requests on an association of
            # its own, taking the SCP role for the class (PS3.4 J.3.3): accept either role.
            ae.add_supported_context(
                STORAGE_COMMITMENT_PUSH_MODEL,
                list(DEFAULT_TRANSFER_SYNTAXES),
                scu_role=True,
                scp_role=True,
            )
        ae.require_called_aet = True  # checked first in _on_requested; kept as a backstop
        ae.maximum_associations = self._config.max_associations + _THREAD_HEADROOM
        ae.maximum_pdu_size = self._config.max_pdu_bytes
        ae.network_timeout = self._config.idle_timeout_seconds
        ae.acse_timeout = self._config.acse_timeout_seconds
        ae.dimse_timeout = self._config.dimse_timeout_seconds
        if direct.installed():
            direct.serve_stores(ae, self._store, self._refuse_dataset, self._budget)
        return ae

    @property
    def budget(self) -> DatasetBudget:
        """Dataset bytes held in memory now, and the caps (for tests and the admin API)."""
        return self._budget

    @property
    def pending(self) -> int:
        """Connections accepted whose association is not negotiated yet."""
        return self._pending.count()

    @property
    def port(self) -> int | None:
        """The bound plain port (useful when the configuration asked for port 0)."""
        if self._server is None:
            return self._config.port
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The bound DICOM-TLS port; None without ``node.tls``."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])
        return self._config.tls.port if self._config.tls else None

    @property
    def listening(self) -> bool:
        """Whether every configured listener is up (checked without connecting to it)."""
        servers = [
            server
            for server, wanted in (
                (self._server, self._config.port is not None),
                (self._tls_server, self._config.tls is not None),
            )
            if wanted
        ]
        return bool(servers) and all(
            server is not None and server.socket is not None and server.socket.fileno() >= 0
            for server in servers
        )

    def reload_tls(self) -> bool:
        """Load the listener's certificate files again now (SIGHUP); False if they are bad.

        Changed files are also noticed by the next connection without this.
        """
        return self._tls.reload() if self._tls is not None else True

    def start(self) -> None:
        """Start listening; returns once the sockets are bound."""
        if self._tls is not None and not adapt.installed():
            # pynetdicom's own reader asks select() whether a socket is readable and
            # cannot see the bytes a TLS socket decrypted ahead (behind the guard).
            raise tls.TLSConfigError(
                "node.tls needs the node's pynetdicom adaptations (unset "
                "DICOMNODE_PYNETDICOM_STOCK, or install pynetdicom "
                f"{adapt.SUPPORTED})"
            )
        self._pending.start()
        key, port = "node.port", self._config.port
        try:
            if port is not None:
                self._server = self._listen(port, self._on_connected)
            if self._tls is not None and self._config.tls is not None:
                key, port = "node.tls.port", self._config.tls.port
                self._tls_server = self._listen(port, self._on_tls_connected)
        except OSError as exc:
            self._pending.stop()
            if self._server is not None:  # the plain port was bound, the TLS one was not
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            raise ConfigError(_bind_problem(key, self._config.host, port, exc)) from None
        log.info(
            "scp_listening",
            ae_title=self._config.ae_title,
            host=self._config.host,
            port=self.port if self._server is not None else None,
            tls_port=self.tls_port if self._tls_server is not None else None,
        )

    def _listen(
        self, port: int, on_connected: Callable[[Event], None]
    ) -> ThreadedAssociationServer:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, on_connected),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            *(
                []
                if self._commitment_reports is None
                else [(evt.EVT_N_EVENT_REPORT, report_handler(self._commitment_reports))]
            ),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        if self._config.reuse_port:
            server = cast(
                ThreadedAssociationServer,
                self._ae.make_server(
                    (self._config.host, port), evt_handlers=handlers, server_class=_SharedPort
                ),
            )
            threading.Thread(
                target=server.serve_forever, name=f"acceptor-{port}", daemon=True
            ).start()
        else:
            server = cast(
                ThreadedAssociationServer,
                self._ae.start_server(
                    (self._config.host, port), block=False, evt_handlers=handlers
                ),
            )
        # socketserver asks this before it gives a connection its thread.
        server.verify_request = self._pending.admit  # type: ignore[method-assign,assignment]
        return server

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let open associations finish for ``grace_seconds``, then abort."""
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        if not servers:
            return
        for server in servers:
            socketserver.BaseServer.shutdown(server)  # stop accepting; joins no thread yet
        # pynetdicom's shutdown then joins every connection's request thread, and a TLS
        # handshake runs on one (until its time-out): end those first.
        self._pending.close_handshakes()
        for server in servers:
            server.shutdown()
        deadline = time.monotonic() + grace_seconds
        # Only established associations can be mid-store; a connection still waiting
        # for its A-ASSOCIATE-RQ (or already dead) would otherwise hold us for acse_timeout.
        while time.monotonic() < deadline and any(
            assoc.is_established for server in servers for assoc in server.active_associations
        ):
            time.sleep(0.05)
        self._pending.stop()  # first: closes connections that would hold abort() below
        for server in servers:
            for assoc in server.active_associations:
                assoc.abort()
            server.server_close()
        self._server = self._tls_server = None
        log.info("scp_stopped")

    # -- handlers: each catches broadly, because it is the root of its thread ----------

    def _on_connected(self, event: Event) -> None:
        """EVT_CONN_OPEN: tune the socket and read it through a guard."""
        sockets.tune(event, self._config.idle_timeout_seconds)
        assoc = event.assoc
        holder: Any = assoc.dul.socket
        raw = getattr(holder, "socket", None)
        if not isinstance(raw, socket.socket):
            return
        setattr(assoc, _RAW, raw)

        def refused(reason: Reason, detail: str, calling_ae: str) -> None:
            self._on_guard_refusal(assoc, reason, detail, calling_ae)

        guard = GuardedSocket(raw, self._config.max_pdu_bytes, refused)
        holder.socket = guard
        self._pending.watch(raw, lambda: guard.calling_ae)

    def _on_tls_connected(self, event: Event) -> None:
        """EVT_CONN_OPEN on the TLS port: the handshake, on this connection's own thread.

        It runs under the association request time-out (a peer that never finishes holds
        only this thread, and the pending watchdog closes it too); a failed handshake is
        reported and the connection closes before any PDU is read.
        """
        assert self._tls is not None and self._config.tls is not None
        holder: Any = event.assoc.dul.socket
        raw = getattr(holder, "socket", None)
        if not isinstance(raw, socket.socket):
            return
        host = str(event.assoc.requestor.address)
        try:
            wrapped = tls.handshake_socket(self._tls.current(), raw)
        except (ssl.SSLError, OSError) as exc:  # the socket closed already
            self._pending.settle(raw)
            self._refusals.report(
                "connection_refused", Reason.TLS_HANDSHAKE, "", host, detail=tls.describe(exc)
            )
            return
        self._pending.replace(raw, wrapped)
        holder.socket = wrapped
        # A backstop: the pending watchdog closes a handshake still unfinished at the
        # request time-out (a per-read time-out alone would not bound a peer that trickles
        # bytes) and reports it; this one firing first would report it a second time.
        wrapped.settimeout(2 * self._config.association_request_timeout_seconds)
        ended = False  # before any PDU: the connection then reads as closed
        try:
            # A peer that closes before its first byte (a port probe, a load balancer's
            # health check) refused nothing: it ends quietly, as on the plain port.
            if socket.socket.recv(wrapped, 1, socket.MSG_PEEK):
                wrapped.do_handshake()
            else:
                ended = True
        except (ssl.SSLError, OSError) as exc:
            if self._pending.settle(wrapped):  # else the watchdog closed it, and reported
                with contextlib.suppress(OSError):
                    wrapped.shutdown(socket.SHUT_RDWR)
                self._refusals.report(
                    "connection_refused", Reason.TLS_HANDSHAKE, "", host, detail=tls.describe(exc)
                )
            ended = True
        if ended:
            self._pending.settle(wrapped)
            self._on_connected(event)
            guard = guarded(holder.socket)
            if guard is not None:
                guard.refusal = Reason.TLS_HANDSHAKE  # reads as closed: nothing is decoded
            return
        setattr(event.assoc, _SUBJECT, tls.peer_subject(wrapped))
        self._on_connected(event)

    def _on_guard_refusal(
        self, assoc: Association, reason: Reason, detail: str, calling_ae: str
    ) -> None:
        self._pending.settle(getattr(assoc, _RAW, None))
        # Read on the DUL's thread: past Sta3 the A-ASSOCIATE-AC is out, even where the
        # association thread has not marked it established yet.
        negotiating = assoc.dul.state_machine.current_state in ("Sta1", "Sta2", "Sta3")
        self._refusals.report(
            "association_rejected" if negotiating else "association_aborted",
            reason,
            peer_ae=calling_ae or str(assoc.requestor.ae_title).strip(),
            peer_host=str(assoc.requestor.address),
            detail=detail,
        )

    def _on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: called AE title, caller, then a free slot; else A-ASSOCIATE-RJ."""
        assoc = event.assoc
        requestor = assoc.requestor
        # The requestor's AE title is filled in only after this event; read the PDU's.
        primitive = requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        host = str(requestor.address)
        refusal: tuple[Reason, tuple[int, int, int], str] | None = None
        if called != self._config.ae_title:
            refusal = (
                Reason.CALLED_AE_TITLE,
                (_REJECT_PERMANENT, _SOURCE_USER, _CALLED_AE_NOT_RECOGNISED),
                f"called AE title {called!r} is not {self._config.ae_title!r}",
            )
        elif not self._allows_caller(calling, host, subject := getattr(assoc, _SUBJECT, None)):
            refusal = (
                Reason.CALLER_NOT_ALLOWED,
                (_REJECT_PERMANENT, _SOURCE_USER, _CALLING_AE_NOT_RECOGNISED),
                "calling AE title, host or certificate subject not in callers"
                + (f" (certificate {subject})" if subject else ""),
            )
        else:
            self._forget_ended()
            with self._lock:
                if len(self._admitted) < self._config.max_associations:
                    self._admitted.add(assoc)
                    return
            refusal = (
                Reason.ASSOCIATION_LIMIT,
                (_REJECT_TRANSIENT, _SOURCE_PRESENTATION, _LOCAL_LIMIT_EXCEEDED),
                f"{self._config.max_associations} associations open (node.max_associations)",
            )
        reason, (result, source, diagnostic), detail = refusal
        assoc.acse.send_reject(result, source, diagnostic)
        # As pynetdicom does after its own rejections: wait for the PDU to go out.
        assoc.kill()
        self._pending.settle(getattr(assoc, _RAW, None))
        self._refusals.report(
            "association_rejected", reason, peer_ae=calling, peer_host=host, detail=detail
        )

    def _forget_ended(self) -> None:
        """Free the slots of associations whose thread has ended without our seeing
        their end (no released, aborted or closed event reached ``_close``).

        Under load the fuzz tests found such ends on broken PDU streams: each one held a
        slot for good, and after ``max_associations`` of them every caller was rejected
        (local limit exceeded). A slot is a live association thread, whatever the events.
        """
        with self._lock:
            ended = [a for a in self._admitted | set(self._associations) if not a.is_alive()]
        for assoc in ended:
            if assoc is threading.current_thread():
                continue
            log.warning("association_end_unseen", association_id=self._id_of(assoc))
            self._close(assoc, released=False)

    def _id_of(self, assoc: Association) -> int | None:
        with self._lock:
            opened = self._associations.get(assoc)
        return None if opened is None else opened[0]

    def _on_rejected(self, event: Event) -> None:
        """EVT_REJECTED: pynetdicom's own rejection, past ours (its bound on threads)."""
        assoc = event.assoc
        self._pending.settle(getattr(assoc, _RAW, None))
        with self._lock:
            self._admitted.discard(assoc)
        self._refusals.report(
            "association_rejected",
            Reason.ASSOCIATION_LIMIT,
            peer_ae=str(assoc.requestor.ae_title).strip(),
            peer_host=str(assoc.requestor.address),
            detail="pynetdicom refused the association (its limit on connection threads)",
        )

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        self._pending.settle(getattr(assoc, _RAW, None))
        peer = _peer_of(assoc)
        try:
            association_id = self._sink.association_opened(peer)
        except StorageError as exc:  # the database is down: stores will say so, one by one
            # Kept, unrecorded (id 0): each C-STORE then gets 0xA700 while the index is
            # down, which senders retry, rather than an abort some treat as final; and
            # once it is back the association stores again.
            log.warning("association_unrecorded", peer_ae=peer.calling_ae, reason=str(exc))
            association_id = 0
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
        """EVT_C_STORE, for the requests pynetdicom serves itself (see ``direct``).

        On pynetdicom's stock path the dataset arrives in a temporary file
        (``sockets.apply_library_settings``): it is read back only within the budget.
        """
        request = cast(C_STORE, event.request)
        assoc = event.assoc
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        syntax = str(event.context.transfer_syntax)
        if getattr(request, "_dataset_path", None) is None:
            status, comment = self._store(
                assoc, sop_class, sop_instance, syntax, cast(BytesIO, request.DataSet).getbuffer()
            )
            return _status(status, comment)
        path = Path(event.dataset_path)
        offset = cstore._dataset_offset(path) or 0
        size = path.stat().st_size - offset
        refused = self._budget.reserve(0, size)
        if refused is not None:
            return _status(*self._refuse_dataset(assoc, sop_class, sop_instance, refused))
        try:
            with path.open("rb") as file:
                file.seek(offset)
                dataset = memoryview(file.read())
            status, comment = self._store(assoc, sop_class, sop_instance, syntax, dataset)
        finally:
            self._budget.release(size)
        return _status(status, comment)

    def _refuse_dataset(
        self, assoc: Association, sop_class_uid: str, sop_instance_uid: str, reason: Reason
    ) -> tuple[int, str | None]:
        """A dataset the budget refused (its bytes were not kept): 0xA700, logged and counted."""
        with self._lock:
            association_id, peer = self._associations.get(assoc) or (0, _peer_of(assoc))
        comment = refusal_comment(reason, self._budget)
        self._refusals.count(reason)
        return _rejected(
            association_id,
            peer,
            sop_class_uid,
            Status.OUT_OF_RESOURCES,
            comment,
            refusal=reason.value,
        )

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
            answer = _reject(instance, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        except InstanceError as exc:
            answer = _reject(instance, Status.CANNOT_UNDERSTAND, str(exc))
        except StorageError as exc:
            answer = _reject(instance, Status.OUT_OF_RESOURCES, str(exc))
        except Exception:
            log.exception(
                "instance_rejected",
                association_id=association_id,
                peer_ae=peer.calling_ae,
                peer_host=peer.host,
                status="0xA700",
            )
            answer = Status.OUT_OF_RESOURCES, "internal error while storing"
        else:
            return Status.SUCCESS, None
        self._refusals.count(Reason.DATASET_REFUSED)
        return answer

    def _on_echo(self, _event: Event) -> int:
        return int(Status.SUCCESS)

    def _on_released(self, event: Event) -> None:
        self._close(event.assoc, released=True)

    def _on_aborted(self, event: Event) -> None:
        self._close(event.assoc, released=False)

    def _on_closed(self, event: Event) -> None:
        # A connection that ends without release or abort (timeout, peer vanished).
        assoc = event.assoc
        if assoc.dul.state_machine.current_state == "Sta2":
            # Closed before any A-ASSOCIATE-RQ (AA-5): the association thread waits for
            # one for the ACSE timeout, holding its thread; there will be none.
            assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]  # read as a timeout
        self._close(assoc, released=False)

    def _close(self, assoc: Association, released: bool) -> None:
        self._pending.settle(getattr(assoc, _RAW, None))
        direct.discard(assoc.dul)
        with self._lock:
            self._admitted.discard(assoc)
            opened = self._associations.pop(assoc, None)
        if opened is None:
            return
        association_id = opened[0]
        try:
            self._sink.association_closed(association_id, released)
        except Exception:
            log.exception("association_close_failed", association_id=association_id)
        guard = guarded(getattr(assoc.dul.socket, "socket", None))
        if guard is not None and guard.refusal is not None:
            return  # the refusal was the one event for this end (_on_guard_refusal)
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
    return _rejected(instance.association_id, instance.peer, instance.sop_class_uid, status, reason)


def _rejected(
    association_id: int,
    peer: Peer,
    sop_class_uid: str,
    status: Status,
    reason: str,
    **fields: str,
) -> tuple[int, str]:
    """Log the one ``instance_rejected`` event; the status and Error Comment to answer."""
    log.warning(
        "instance_rejected",
        association_id=association_id,
        peer_ae=peer.calling_ae,
        peer_host=peer.host,
        sop_class_uid=sop_class_uid,
        status=f"0x{int(status):04X}",
        reason=reason,
        **fields,
    )
    # (0000,0902) Error Comment is LO: at most 64 characters.
    return status, reason[:64]


class _SharedPort(ThreadedAssociationServer):
    """A listener bound with SO_REUSEPORT: each worker process of ``serve --workers``
    binds the same port and the kernel spreads new connections over them."""

    def server_bind(self) -> None:
        cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _bind_problem(key: str, host: str, port: int | None, exc: OSError) -> str:
    """Why the listener could not bind to ``host:port``, and what to change, in one line."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{key} {port}: in use by another program on {host}; stop that program or "
            "choose another port (serve --port N for a trial)"
        )
    if exc.errno == errno.EACCES:
        return f"{key} {port}: not allowed (ports below 1024 need privileges); use 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"node.host {host}: not an address of this machine"
    return f"{key} {port}: cannot listen on {host}: {exc.strerror or exc}"
