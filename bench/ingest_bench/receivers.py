"""The receivers under test, each started fresh on loopback with an empty storage folder.

Every receiver runs at its own defaults except where noted, and each says in `durability`
what an acknowledgement promises, because that is most of what separates their speeds:

- the node: file fsync'ed, renamed, folder fsync'ed, SQLite (WAL, synchronous=FULL)
  committed, all before the C-STORE response;
- Orthanc: ``SyncStorageArea: true`` (its default since 1.7.4: fsync of each file) and
  its own SQLite index;
- storescp: writes each file, never fsyncs.

storescp is started here rather than through ``dicomnode.testing.dcmtk.StoreSCP``:
that harness logs verbosely (``-v``) and runs a shell per received file
(``--exec-on-reception``) to journal complete files, which would put a fork and exec
into every C-STORE of the baseline.

With ``--tls`` (``ingest_bench.tls``) each receiver takes mutual DICOM-TLS on the port
it reports: the node on its ``node.tls`` port, Orthanc and storescp on their only one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from dicomnode.store.index import Index
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.orthanc import Orthanc
from dicomnode.testing.ports import free_port, wait_for_port
from dicomnode.testing.process import ManagedProcess, PeerStartError
from ingest_bench.tls import BenchTLS

STORESCP = Path("/usr/bin/storescp")
_START_TIMEOUT_S = 30.0


class Receiver(Protocol):
    """A C-STORE SCP on 127.0.0.1 that the benchmark starts, measures and stops."""

    name: str
    ae_title: str
    port: int  # the TLS port under --tls

    durability: str  # what an acknowledgement promises

    @property
    def pid(self) -> int: ...

    def stored(self) -> int:
        """How many instances the receiver holds, by its own account."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NodeReceiver:
    """``python -m dicomnode serve`` with the default configuration (JSON logs at info)."""

    name = "node"
    durability = "fsync file + folder, SQLite WAL synchronous=FULL"

    def __init__(self, workdir: Path, tls: BenchTLS | None = None) -> None:
        self._tls_port: int | None = None
        settings = None
        if tls is not None:
            self._tls_port = free_port()
            settings = {"node": {"tls": tls.node_settings(self._tls_port)}}
        self._node = NodeProcess(workdir, settings)
        self.ae_title = NODE_AE
        self.port = self._tls_port or self._node.port

    @property
    def pid(self) -> int:
        return self._node.process.pid

    def stored(self) -> int:
        index = Index(self._node.config.database_url)
        try:
            return index.count_instances()
        finally:
            index.close()

    def __enter__(self) -> Self:
        try:
            self._node.start(timeout=_START_TIMEOUT_S)  # waits for the plain port
            if self._tls_port is not None:
                wait_for_port(self._tls_port, timeout=_START_TIMEOUT_S)
        except BaseException:
            # NodeProcess.start leaves a node that never listened running; end it here.
            self._node.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._node.stop()


class OrthancReceiver:
    """Orthanc with its default fsync behaviour and DCMTK's TCP_NODELAY switched on."""

    name = "orthanc"
    durability = "SyncStorageArea=true: fsync each file; SQLite index"

    def __init__(self, workdir: Path, tls: BenchTLS | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        # sync_storage=True is Orthanc's own default (SyncStorageArea, since 1.7.4);
        # it is spelled out so that the harness's default can never change the figures.
        self._orthanc = Orthanc(
            workdir=workdir,
            sync_storage=True,
            tcp_nodelay=True,
            tls=tls.orthanc() if tls is not None else None,
        )
        self.ae_title = self._orthanc.aet
        self.port = self._orthanc.dicom_port

    @property
    def pid(self) -> int:
        return self._orthanc.pid

    def stored(self) -> int:
        statistics = self._orthanc.get_json("/statistics")
        return int(statistics["CountInstances"])

    def __enter__(self) -> Self:
        self._orthanc.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._orthanc.stop()


class StorescpReceiver:
    """DCMTK storescp writing one file per instance into its own folder, no fsync."""

    name = "storescp"
    durability = "plain write, no fsync"

    def __init__(self, workdir: Path, tls: BenchTLS | None = None) -> None:
        self.ae_title = "STORESCP"
        self.port = free_port()
        self.output_dir = workdir / "received"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(STORESCP),
            "-dhl",  # no reverse DNS lookup per association
            "+x=",  # prefer Explicit VR Little Endian, as the harness does
            *(tls.storescp_args() if tls is not None else []),
            "-aet",
            self.ae_title,
            "-od",
            str(self.output_dir),
            str(self.port),
        ]
        self._process = ManagedProcess(
            argv, log_path=workdir / "storescp.log", env={"TCP_NODELAY": "1"}, cwd=workdir
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def stored(self) -> int:
        return sum(1 for path in self.output_dir.iterdir() if path.is_file())

    def __enter__(self) -> Self:
        self._process.start()
        try:
            wait_for_port(
                self.port,
                timeout=_START_TIMEOUT_S,
                alive=lambda: self._process.running,
                pid=self.pid,
            )
        except Exception as exc:
            failure = self._process.describe_failure()
            self._process.stop()
            raise PeerStartError(failure) from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._process.stop()


RECEIVERS: dict[str, Callable[[Path, BenchTLS | None], Receiver]] = {
    "node": NodeReceiver,
    "orthanc": OrthancReceiver,
    "storescp": StorescpReceiver,
}
"""Receiver name -> factory taking the run's empty working folder and the TLS files (or
None: plain TCP); in run order."""

DURABILITY: dict[str, str] = {
    cls.name: cls.durability for cls in (NodeReceiver, OrthancReceiver, StorescpReceiver)
}
