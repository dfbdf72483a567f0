"""A throw-away Orthanc on loopback, with the few REST calls the tests need.

Orthanc 1.10 has no option to choose the interface it binds: both its DICOM and HTTP
servers listen on 0.0.0.0. What the configuration can do, this one does:
``RemoteAccessAllowed: false`` makes the HTTP server refuse non-loopback clients, and the
ports are random. The DICOM port accepts C-STORE from any host because the tests need
``DicomAlwaysAllowStore``; pass ``extra_config={"DicomAlwaysAllowStore": False,
"DicomCheckModalityHost": True}`` to admit only the declared (loopback) modalities.

DICOM-TLS (Orthanc 1.9.0 and later): with ``tls``, Orthanc's DICOM port speaks TLS only
(``DicomTlsEnabled``), with one certificate for its SCP and its SCU and one file of
trusted certificates for both sides; a modality declared with ``use_tls=True``
(``UseDicomTls``) is called over TLS. Orthanc verifies a peer's chain but not its name
(DCMTK underneath).

With ``dicomweb=True`` Orthanc loads Debian's DICOMweb plugin (``orthanc-dicomweb``) and
serves QIDO-RS/WADO-RS/STOW-RS under ``/dicom-web/`` (``dicomweb_url``). With
``users`` (name: password) its HTTP server asks for HTTP basic authentication; the REST
calls made here authenticate as the first user.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dicomnode.testing.ports import LOOPBACK, free_port, require_loopback, wait_for_port
from dicomnode.testing.process import HarnessError, ManagedProcess, PeerStartError, poll_until

ORTHANC_FALLBACK = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"

Modality = tuple[str, str, int]
"""A remote DICOM node as Orthanc's ``DicomModalities`` wants it: (AE title, host, port)."""


@dataclass(frozen=True, slots=True)
class OrthancTLS:
    """Orthanc's DICOM-TLS files (PEM; the key unencrypted, as Orthanc cannot prompt)."""

    certificate: Path  # presented by its SCP and, as a client certificate, by its SCU
    private_key: Path
    trusted_certificates: Path  # issuers (or peers) trusted on both sides
    remote_certificate_required: bool = True  # its SCP refuses callers without one

    def config(self) -> dict[str, Any]:
        return {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.certificate),
            "DicomTlsPrivateKey": str(self.private_key),
            "DicomTlsTrustedCertificates": str(self.trusted_certificates),
            "DicomTlsRemoteCertificateRequired": self.remote_certificate_required,
        }


class OrthancRestError(HarnessError):
    """Orthanc answered a REST call with an HTTP error; keeps its JSON explanation."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


def orthanc_binary() -> Path:
    """The Orthanc executable: from ``PATH``, else the Debian location."""
    found = shutil.which("Orthanc")
    return Path(found) if found else ORTHANC_FALLBACK


class Orthanc:
    """An Orthanc process in a temporary directory it owns, stopped by its PID on exit."""

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        sync_storage: bool = True,
        tcp_nodelay: bool = True,
        workdir: Path | None = None,
        extra_config: Mapping[str, Any] | None = None,
        tls: OrthancTLS | None = None,
        dicomweb: bool = False,
        users: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        for _aet, host, _port in (modalities or {}).values():
            require_loopback(host)
        self.aet = aet
        self.host = LOOPBACK
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.url = f"http://{self.host}:{self.http_port}"
        # A unique name lets `start` check that the answering server is this one.
        self.name = f"dicomnode-test-{uuid.uuid4().hex[:12]}"
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="orthanc-")
            workdir = Path(self._tempdir.name)
        self.workdir = workdir
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.config: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": dict(users or {}),
            "DicomServerEnabled": True,
            "DicomModalities": {name: list(m) for name, m in (modalities or {}).items()},
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
            **({"DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT}} if dicomweb else {}),
            "LuaScripts": [],
            "StorageCompression": False,
            "SyncStorageArea": sync_storage,
            "SaveJobs": False,
            **(tls.config() if tls is not None else {}),
            **(extra_config or {}),
        }
        # Orthanc's DICOM side is DCMTK, which takes TCP_NODELAY from the environment;
        # Debian's build leaves Nagle on unless told (about 40 ms per C-STORE).
        self._process = ManagedProcess(
            [str(orthanc_binary()), str(self.config_path)],
            log_path=self.log_path,
            env={"TCP_NODELAY": "1" if tcp_nodelay else "0"},
            cwd=workdir,
        )
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._authorization = ""
        if users:
            name, password = next(iter(users.items()))
            pair = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
            self._authorization = f"Basic {pair}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service root (with ``dicomweb=True``), without a final slash."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> Self:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self._process.start()
        try:
            poll_until(self._answers, timeout=self._start_timeout, what="Orthanc's /system")
            wait_for_port(
                self.dicom_port, timeout=self._start_timeout, alive=self._alive, pid=self.pid
            )
        except Exception as exc:
            failure = self._process.describe_failure()
            self.close()
            raise PeerStartError(failure) from exc
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        """Stop Orthanc by its PID (SIGTERM; SIGKILL after `stop_timeout`); keep its files."""
        self._process.stop(self._stop_timeout)

    def close(self) -> None:
        """Stop Orthanc and delete the temporary directory it owns."""
        try:
            self.stop()
        finally:
            if self._tempdir is not None:
                self._tempdir.cleanup()
                self._tempdir = None

    def _alive(self) -> bool:
        return self._process.running

    def _answers(self) -> bool:
        if not self._alive():
            raise PeerStartError("Orthanc exited while starting")
        try:
            system = self.get_json("/system")
        except (OSError, HarnessError):
            return False
        if system.get("Name") != self.name:
            raise PeerStartError(f"another server answers on port {self.http_port}")
        return True

    def log_text(self) -> str:
        return self._process.log_text()

    # --- REST -----------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> bytes:
        """One REST call; raises `OrthancRestError` with Orthanc's explanation on failure."""
        req = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - URL is our own http://127.0.0.1
        if content_type:
            req.add_header("Content-Type", content_type)
        if self._authorization:
            req.add_header("Authorization", self._authorization)
        try:
            with self._opener.open(req, timeout=60) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise OrthancRestError(method, path, exc.code, detail) from exc

    def get_json(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post_json(self, path: str, body: Any) -> Any:
        raw = self.request("POST", path, json.dumps(body).encode(), "application/json")
        return json.loads(raw) if raw.strip() else None

    def put_json(self, path: str, body: Any) -> Any:
        raw = self.request("PUT", path, json.dumps(body).encode(), "application/json")
        return json.loads(raw) if raw.strip() else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        ids: list[str] = self.get_json("/instances")
        return ids

    def series(self) -> list[str]:
        """Orthanc IDs of every stored series."""
        ids: list[str] = self.get_json("/series")
        return ids

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, byte for byte as Orthanc keeps it."""
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Tags of an instance keyed by keyword (``/simplified-tags``)."""
        tags: dict[str, Any] = self.get_json(f"/instances/{orthanc_id}/simplified-tags")
        return tags

    def upload(self, path: Path) -> str:
        """Store one DICOM file through REST (POST /instances); returns its Orthanc ID."""
        answer = json.loads(self.request("POST", "/instances", path.read_bytes()))
        if answer.get("Status") not in {"Success", "AlreadyStored"}:
            raise HarnessError(f"Orthanc did not store {path}: {answer}")
        orthanc_id: str = answer["ID"]
        return orthanc_id

    def put_modality(self, name: str, modality: Modality, *, use_tls: bool = False) -> None:
        """Declare (or replace) a remote node at run time, e.g. one started after Orthanc;
        ``use_tls``: Orthanc calls it over DICOM-TLS (needs ``tls``)."""
        aet, host, port = modality
        body: dict[str, Any] = {"AET": aet, "Host": require_loopback(host), "Port": port}
        if use_tls:
            body["UseDicomTls"] = True
        self.put_json(f"/modalities/{name}", body)

    def store_to_modality(
        self, modality_name: str, resources: Sequence[str], *, synchronous: bool = True
    ) -> dict[str, Any]:
        """C-STORE resources to a declared modality (POST /modalities/{name}/store).

        Synchronous answers carry ``InstancesCount`` and ``FailedInstancesCount``;
        asynchronous ones carry the job ``ID``.
        """
        answer: dict[str, Any] = self.post_json(
            f"/modalities/{modality_name}/store",
            {"Resources": list(resources), "Synchronous": synchronous},
        )
        return answer

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
