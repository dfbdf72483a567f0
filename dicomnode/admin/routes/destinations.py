"""``/api/destinations``: each configured destination, its queue, and a check: a C-ECHO,
or for a DICOMweb destination a QIDO-RS query."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from dicomnode.admin import queries
from dicomnode.admin.auth import require_admin
from dicomnode.admin.context import Context
from dicomnode.admin.schemas import DestinationOut, DestinationsQuery, EchoOut, ErrorOut
from dicomnode.admin.services import AdminServices
from dicomnode.config import Destination, DicomwebDestination
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.dicomweb import web_settings
from dicomnode.dicom.scu import ScuSettings, TlsSettings
from dicomnode.dicom.status import describe, is_success
from dicomnode.dicom.tls import client_context
from dicomnode.errors import ConfigError, PeerError
from dicomnode.logs import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/api/destinations", tags=["destinations"])

# A check answers a person waiting at a page: a destination slower than this is down to them.
ECHO_TIMEOUT_SECONDS = 5.0


@router.get(
    "",
    summary="Destinations with their outbox state and, unless echo=false, a C-ECHO",
    responses={
        403: {
            "model": ErrorOut,
            "description": "A viewer's token asked for a C-ECHO (echo=false lists only)",
        }
    },
)
def list_destinations(
    context: Context, request: Request, query: Annotated[DestinationsQuery, Query()]
) -> list[DestinationOut]:
    """A C-ECHO opens associations to other nodes: an admin's action, as in the CLI."""
    if query.echo:
        require_admin(request, "a C-ECHO of the destinations (echo=true, the default)")
    services = context.services
    states = queries.outbox_by_destination(services.database)
    names = sorted(services.destinations)
    checks: dict[str, EchoOut | None] = dict.fromkeys(names)
    if query.echo and names:
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            futures = {
                name: pool.submit(_echo, services, name, services.destinations[name])
                for name in names
            }
            checks = {name: future.result() for name, future in futures.items()}
    result = []
    for name in names:
        destination = services.destinations[name]
        state = states.get(name, queries.OutboxState())
        where: dict[str, Any] = (
            {"kind": "dicomweb", "url": destination.url}
            if isinstance(destination, DicomwebDestination)
            else {
                "ae_title": destination.ae_title,
                "host": destination.host,
                "port": destination.port,
                "calling_ae": destination.calling_ae or services.calling_ae,
            }
        )
        result.append(
            DestinationOut(
                name=name,
                **{"ae_title": None, "host": None, "port": None, "calling_ae": None, **where},
                pending=state.pending,
                failed=state.failed,
                oldest_pending_at=state.oldest_pending_at,
                echo=checks[name],
            )
        )
    return result


def _tls(name: str, destination: Destination) -> TlsSettings | None:
    """The destination's DICOM-TLS, its context built when the check connects."""
    config = destination.tls
    if config is None:
        return None
    return TlsSettings(
        lambda: client_context(config), config.server_name, f"destinations.{name}.tls"
    )


def _echo(
    services: AdminServices, name: str, destination: Destination | DicomwebDestination
) -> EchoOut:
    if isinstance(destination, DicomwebDestination):
        return _qido(services, name, destination)
    settings = ScuSettings(
        calling_ae=destination.calling_ae or services.calling_ae,
        connect_timeout_seconds=min(destination.connect_timeout_seconds, ECHO_TIMEOUT_SECONDS),
        network_timeout_seconds=min(destination.network_timeout_seconds, ECHO_TIMEOUT_SECONDS),
        tls=_tls(name, destination),
    )
    address = DicomAddress(destination.ae_title, destination.host, destination.port)
    try:
        result = services.echo(address, settings)
    except PeerError as exc:
        return EchoOut(ok=False, status=None, ms=None, error=str(exc))
    except Exception as exc:
        # The root of this check's thread: one odd destination must not fail the page.
        log.exception("destination_echo_failed", destination=name)
        return EchoOut(ok=False, status=None, ms=None, error=f"{type(exc).__name__}: {exc}")
    ok = is_success(result.status)
    return EchoOut(
        ok=ok,
        status=result.status,
        ms=round(result.seconds * 1000, 1),
        error=None if ok else f"C-ECHO answered 0x{result.status:04X} ({describe(result.status)})",
    )


def _qido(services: AdminServices, name: str, destination: DicomwebDestination) -> EchoOut:
    """A DICOMweb destination's check: ``GET {url}/studies?limit=1`` (QIDO-RS)."""
    try:
        settings = web_settings(name, destination)
        settings = replace(
            settings, timeout_seconds=min(settings.timeout_seconds, ECHO_TIMEOUT_SECONDS)
        )
        seconds = services.web_echo(settings)
    except (PeerError, ConfigError) as exc:
        return EchoOut(ok=False, status=None, ms=None, error=str(exc))
    except Exception as exc:
        # The root of this check's thread: one odd destination must not fail the page.
        log.exception("destination_echo_failed", destination=name)
        return EchoOut(ok=False, status=None, ms=None, error=f"{type(exc).__name__}: {exc}")
    return EchoOut(ok=True, status=None, ms=round(seconds * 1000, 1), error=None)
