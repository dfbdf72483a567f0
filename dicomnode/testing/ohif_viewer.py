"""The OHIF viewer from the npm registry, served on loopback over an Orthanc's DICOMweb.

`ohif_dist` runs ``npm pack @ohif/app@VERSION`` once into a cache folder, checks the
tarball against the pinned integrity, and keeps its prebuilt ``dist/``; later calls reuse
it. `ViewerServer` serves that folder with our own ``app-config.js`` (the stock one points
at a public demo server), falls back to ``index.html`` for the app's routes
(``/viewer?StudyInstanceUIDs=...``), and forwards ``/dicom-web/...`` to Orthanc, so the
viewer and its data share one origin and need no CORS. It sends the cross-origin isolation
headers OHIF's deployment notes ask for (SharedArrayBuffer for its volume loader).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from dicomnode.testing.orthanc import DICOMWEB_ROOT
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import HarnessError

OHIF_VERSION = "3.13.2"
# npm's own checksum of the 3.13.2 tarball (``npm view @ohif/app@3.13.2 dist.integrity``).
OHIF_INTEGRITY = (
    "sha512-"
    "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
# The onnxruntime files (136 MB) serve OHIF's optional AI tools, which the tests never open.
_SKIPPED = ("package/dist/ort/",)
_CHUNK = 64 * 1024


class ViewerUnavailable(HarnessError):  # noqa: N818 - reads as the condition it reports
    """The viewer could not be fetched (no npm, no registry, a corrupt tarball)."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/dicomnode``, else ``~/.cache/dicomnode``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dicomnode"


def ohif_dist(version: str = OHIF_VERSION, cache: Path | None = None) -> Path:
    """The viewer's prebuilt ``dist/`` folder, fetched with npm on first use."""
    folder = (cache or cache_root()) / f"ohif-{version}"
    dist = folder / "dist"
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerUnavailable("npm is not installed: cannot fetch @ohif/app")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".ohif-{version}-") as work:
        tarball = _npm_pack(npm, f"@ohif/app@{version}", Path(work))
        if version == OHIF_VERSION:
            _check_integrity(tarball, OHIF_INTEGRITY)
        unpacked = Path(work) / "unpacked"
        with tarfile.open(tarball) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith("package/dist/") and not m.name.startswith(_SKIPPED)
            ]
            archive.extractall(unpacked, members=members, filter="data")
        if not (unpacked / "package/dist/index.html").is_file():
            raise ViewerUnavailable(f"@ohif/app@{version} has no dist/index.html")
        staged = Path(work) / "staged"
        staged.mkdir()
        (unpacked / "package/dist").rename(staged / "dist")
        try:
            staged.rename(folder)  # atomic: a parallel fetch either wins or finds it done
        except OSError:
            if not (dist / "index.html").is_file():
                raise
    return dist


def _npm_pack(npm: str, spec: str, into: Path) -> Path:
    done = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=into,
    )
    if done.returncode != 0:
        raise ViewerUnavailable(f"npm pack {spec} failed ({done.returncode}):\n{done.stderr}")
    (entry,) = json.loads(done.stdout)
    return into / str(entry["filename"])


def _check_integrity(tarball: Path, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with tarball.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise ViewerUnavailable(f"{tarball.name} does not match its pinned {algorithm}")


def app_config(dicomweb_url: str) -> str:
    """An ``app-config.js`` with one DICOMweb data source (Orthanc's, through the proxy)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "dicomnode test Orthanc",
            "name": "orthanc",
            "qidoRoot": dicomweb_url,
            "wadoRoot": dicomweb_url,
            "wadoUriRoot": dicomweb_url,
            "qidoSupportsIncludeField": False,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    config: dict[str, Any] = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "maxNumberOfWebWorkers": 2,
        "showLoadingIndicator": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class _Handler(SimpleHTTPRequestHandler):
    server: _Server
    _FORWARDED: ClassVar[tuple[str, ...]] = ("Accept", "Host", "Range", "If-None-Match")

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(DICOMWEB_ROOT):
            self._forward()
        elif path == "/app-config.js":
            self._send(self.server.config_js.encode(), "application/javascript")
        elif path != "/" and (Path(self.directory) / path.lstrip("/")).is_file():
            super().do_GET()
        else:
            self.path = "/index.html"  # the app's own routes
            super().do_GET()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        headers = {k: v for k in self._FORWARDED if (v := self.headers.get(k)) is not None}
        upstream = http.client.HTTPConnection(LOOPBACK, self.server.upstream_port, timeout=120)
        try:
            upstream.request("GET", self.path, headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in {"connection", "transfer-encoding", "keep-alive"}:
                    self.send_header(name, value)
            self.end_headers()
            while block := answer.read(_CHUNK):
                self.wfile.write(block)
        finally:
            upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    config_js = ""
    upstream_port = 0
    requests: list[str]


class ViewerServer:
    """OHIF's ``dist/`` and a ``/dicom-web/`` proxy to Orthanc on an ephemeral loopback port.

    HTTP/1.0 (the handler's default): each answer ends with its connection, so a proxied
    body streams without being held whole.
    """

    def __init__(self, dist: Path, orthanc_http_port: int) -> None:
        handler = _partial_handler(dist)
        self._server = _Server((LOOPBACK, 0), handler)
        self._server.upstream_port = orthanc_http_port
        self._server.requests = []
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._server.config_js = app_config(self.url + DICOMWEB_ROOT.rstrip("/"))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[str]:
        """The access log: one line per request (method, path, status)."""
        return self._server.requests

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _partial_handler(dist: Path) -> type[_Handler]:
    """The handler class bound to ``dist`` (``SimpleHTTPRequestHandler`` takes a directory)."""

    class Bound(_Handler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(dist), **kwargs)

    return Bound
