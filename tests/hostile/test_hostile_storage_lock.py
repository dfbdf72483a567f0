"""One node owns its storage: a second ``serve`` on it stops before touching anything.

Measured before the lock: a second ``serve`` on a live node's storage ran crash recovery
(orphan files removed, open associations aborted) before failing to bind; it lost 4
acknowledged files and made 2 in-flight stores fail. Both nodes here are real processes,
and a real sender stores into the first the whole time.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.presentation import build_context
from sqlalchemy import select

from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.database import Database
from dicomnode.store.index import Index
from dicomnode.store.lock import LOCK_FILE_NAME
from dicomnode.store.spool import Spool
from dicomnode.store.tables import AssociationRow
from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SECOND_SERVE_TIMEOUT_S = 90.0  # the refusal takes an interpreter start; a second node never ends


@dataclass
class Sender:
    """Stores fresh instances over one association until told to stop."""

    port: int
    template: Dataset
    acknowledged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = [build_context(CT, EXPLICIT_LE)]
        assoc = ae.associate(LOOPBACK, self.port, ae_title=NODE_AE)
        if not assoc.is_established:
            self.failed.append(("", "association not established"))
            return
        try:
            while not self.stop.is_set() and assoc.is_established:
                ds = copy.deepcopy(self.template)
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code == 0x0000:
                    self.acknowledged.append(ds.SOPInstanceUID)
                else:
                    self.failed.append((ds.SOPInstanceUID, f"status {code!r}"))
        finally:
            if assoc.is_established:
                assoc.release()


@contextmanager
def sending(port: int) -> Iterator[Sender]:
    template = next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=32, columns=32)))
    sender = Sender(port, template)
    thread = threading.Thread(target=sender.run, name="sender", daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        sender.stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the sender did not finish"


def association_states(url: str) -> list[str]:
    database = Database(url)
    try:
        with database.reading() as session:
            return list(session.scalars(select(AssociationRow.state)))
    finally:
        database.close()


def second_config(first: NodeProcess, tmp_path: Path, same_port: bool) -> Path:
    """The first node's configuration, or the same storage behind another DICOM port."""
    if same_port:
        return first.config_path
    other = NodeProcess(tmp_path / "second", {"storage": {"path": str(first.config.storage.path)}})
    return other.config_path


@pytest.mark.parametrize("same_port", [True, False], ids=["same-config", "other-port"])
def test_a_second_serve_on_the_same_storage_exits_2_and_changes_nothing(
    node_process: Callable[..., NodeProcess], tmp_path: Path, same_port: bool
) -> None:
    first = node_process().start()
    storage = first.config.storage.path
    spool = Spool(first.config.spool_path)
    with sending(first.port) as sender:
        poll_until(lambda: len(sender.acknowledged) >= 20, timeout=60, what="20 stores")
        files_before = set(spool.names())

        second = run_dicomnode(
            "serve", "--config", str(second_config(first, tmp_path, same_port)),
            timeout=SECOND_SERVE_TIMEOUT_S,
        )  # fmt: skip

        assert second.returncode == 2, second.stdout + second.stderr
        assert f"storage {storage} is in use by process {first.process.pid}" in second.stderr
        # Nothing was repaired: the live association is still open, no file went.
        assert "open" in association_states(first.config.database_url)
        assert files_before <= set(spool.names())
        acknowledged_during = len(sender.acknowledged)
        poll_until(
            lambda: len(sender.acknowledged) >= acknowledged_during + 10,
            timeout=60,
            what="stores after the second serve",
        )
    assert sender.failed == []
    assert first.process.running
    assert (storage / LOCK_FILE_NAME).read_text().strip() == str(first.process.pid)

    index = Index(first.config.database_url)
    try:
        stored = {
            row.sop_instance_uid: row.spool_name
            for series in index.list_series()
            for row in index.instances_of(series.id)
        }
    finally:
        index.close()
    for uid in sender.acknowledged:
        assert uid in stored, f"{uid} was acknowledged but is not indexed"
        assert pydicom.dcmread(spool.path(stored[uid])).SOPInstanceUID == uid


def test_read_only_commands_work_beside_a_running_node_without_taking_its_lock(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    rules = tmp_path / "node0" / "rules"
    rules.mkdir(parents=True)
    (rules / "r.yaml").write_text(
        "- {name: from-modality, match: {CallingAETitle: MODALITY}, forward_to: pacs}\n"
    )
    pacs = {"ae_title": "PACS", "host": LOOPBACK, "port": 1}  # nobody there: sends fail
    first = node_process(destinations={"pacs": pacs}).start()
    with sending(first.port) as sender:
        poll_until(lambda: len(sender.acknowledged) >= 3, timeout=60, what="3 stores")
    series_uid = str(sender.template.SeriesInstanceUID)
    config = str(first.config_path)

    listed = run_dicomnode("series", "--json", "--config", config)
    jobs = run_dicomnode("jobs", "--config", config)
    explained = run_dicomnode("rules", "explain", "--series", series_uid, "--config", config)

    assert listed.returncode == 0, listed.stderr
    assert series_uid in listed.stdout
    assert jobs.returncode == 0, jobs.stderr
    assert explained.returncode == 0, explained.stderr
    assert "MATCH     from-modality" in explained.stdout
    assert first.process.running
    lock_file = first.config.storage.path / LOCK_FILE_NAME
    assert lock_file.read_text().strip() == str(first.process.pid)
    assert "spool_orphans_removed" not in first.logs()
