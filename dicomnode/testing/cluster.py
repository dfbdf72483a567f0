"""Several dicomnode processes on one PostgreSQL and one shared folder, for the cluster
acceptance tests (issue 14, docs/scaling.md).

What is here: the settings of one node of such a cluster; copies of a series under new
UIDs (60 "different" series from one real CT); a model function that blocks until a file
appears (a job to kill a node in the middle of, deterministically); a pynetdicom storage
SCP that holds every C-STORE until the test opens its gate (a send to kill a node in the
middle of); and a reader of the index tables, for assertions on what the cluster did.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dicomnode.store.tables import Base
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.ports import LOOPBACK, free_port
from dicomnode.testing.process import HarnessError

# Short leases: a killed node's work is taken over within seconds, not the default 30.
LEASE_SECONDS = 2.0
# What a model or a held C-STORE waits at most, so that a failed test ends anyway.
HOLD_LIMIT_S = 300.0

Row = TypeVar("Row", bound=Base)


def node_settings(
    database_url: str,
    shared: Path,
    node_id: str,
    *,
    lease_seconds: float = LEASE_SECONDS,
    **extra: Any,
) -> dict[str, Any]:
    """The settings of one node of a cluster (merged into ``NodeProcess``'s defaults)."""
    settings: dict[str, Any] = {
        "node": {"id": node_id, "lease_seconds": lease_seconds},
        "storage": {"shared_path": str(shared)},
        "database": {"url": database_url},
        # No admin API: these tests read the tables, and a port less to find per node.
        "admin": {"enabled": False},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


def cluster_node(
    make: Callable[..., NodeProcess], database_url: str, shared: Path, node_id: str, **extra: Any
) -> NodeProcess:
    """A node of the cluster (not started), made by ``make`` (the ``node_process`` fixture)."""
    return make(**node_settings(database_url, shared, node_id, **extra))


def stop_all(nodes: Sequence[NodeProcess]) -> None:
    """SIGTERM every node at once (a node takes seconds to stop; one after the other
    would add them up)."""
    with ThreadPoolExecutor(max(1, len(nodes))) as pool:
        list(pool.map(lambda node: node.stop(), nodes))


@dataclass(frozen=True, slots=True)
class SeriesCopy:
    """One copy of a series: its folder, files and UIDs."""

    folder: Path
    paths: tuple[Path, ...]
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]


def copy_series(sources: Sequence[Path], folder: Path, copies: int) -> list[SeriesCopy]:
    """``copies`` copies of a series, each with new Study, Series and SOP Instance UIDs."""
    datasets = [pydicom.dcmread(path) for path in sources]
    made = []
    for n in range(copies):
        target = folder / f"series{n:03d}"
        target.mkdir(parents=True)
        study_uid, series_uid = generate_uid(), generate_uid()
        paths, sop_uids = [], []
        for i, ds in enumerate(datasets):
            sop_uid = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            path = target / f"{i:03d}.dcm"
            ds.save_as(path)
            paths.append(path)
            sop_uids.append(sop_uid)
        made.append(SeriesCopy(target, tuple(paths), study_uid, series_uid, tuple(sop_uids)))
    return made


def sop_uid_counts(paths: Sequence[Path]) -> Counter[str]:
    """How often each SOP Instance UID occurs among the files (duplicates count twice)."""
    return Counter(
        str(
            pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])[
                "SOPInstanceUID"
            ].value
        )
        for p in paths
    )


def held_threshold(
    array: npt.NDArray[np.float32], release_file: str, threshold: float = 300.0
) -> npt.NDArray[np.uint8]:
    """A ``kind: python`` model that blocks until ``release_file`` exists, then labels 1
    where the value reaches ``threshold``: a job a test can kill a node in the middle of."""
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not Path(release_file).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_file} never appeared")
        time.sleep(0.05)
    return (array >= threshold).astype(np.uint8)


class GatedStoreSCP:
    """A storage SCP (pynetdicom, loopback) that holds each C-STORE until ``release``.

    Held requests count in ``held``; once released, each is answered Success and its SOP
    Instance UID recorded in ``received`` (a resend is recorded twice).
    """

    def __init__(self, ae_title: str = "GATED") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.held = 0
        self.received: list[str] = []
        self._ae = AE(ae_title=ae_title)
        self._ae.supported_contexts = StoragePresentationContexts
        self._server: Any = None

    def start(self) -> Self:
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store)]
        self._server = self._ae.start_server(
            (LOOPBACK, self.port), block=False, evt_handlers=handlers
        )
        return self

    def release(self) -> None:
        """Answer every held C-STORE and every later one at once."""
        self.gate.set()

    def uids(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def _store(self, event: Event) -> int:
        with self._lock:
            self.held += 1
        self.gate.wait(HOLD_LIMIT_S)
        uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID)
        with self._lock:
            self.received.append(uid)
        return 0x0000

    def stop(self) -> None:
        self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OneAssociation:
    """One association to a node (pynetdicom), sending file by file: the test decides
    what happens between two C-STOREs (start another node, stop the database)."""

    def __init__(self, port: int, sop_classes: Sequence[str], ae_title: str = "DICOMNODE") -> None:
        self._ae = AE(ae_title="CLUSTERSCU")
        for sop_class in dict.fromkeys(sop_classes):
            self._ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
        self._port, self._called = port, ae_title
        self._assoc: Any = None

    def open(self) -> Self:
        self._assoc = self._ae.associate(LOOPBACK, self._port, ae_title=self._called)
        if not self._assoc.is_established:
            raise HarnessError(f"no association with {self._called}@{LOOPBACK}:{self._port}")
        return self

    def send(self, path: Path) -> int | None:
        """C-STORE one file; its DIMSE status, None when none came back."""
        status = self._assoc.send_c_store(path)
        return int(status.Status) if "Status" in status else None

    def release(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class IndexReader:
    """Reads the cluster's index tables directly (SQLAlchemy), for assertions."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)

    def rows(self, table: type[Row], *where: Any) -> list[Row]:
        """Every row of ``table`` (a ``dicomnode.store.tables`` class), by id."""
        with Session(self.engine) as session:
            key = getattr(table, "id", None)
            query = select(table).where(*where)
            return list(session.scalars(query if key is None else query.order_by(key)))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
