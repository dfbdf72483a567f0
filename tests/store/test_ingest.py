"""Ingest writes the file beside the index work, and commits the index only after it.

The file is written, then synced on a writer thread while the header is read and the
index row prepared; renamed into place and its folder synced just before the commit.
These tests hold the sync back, or make a step fail, and look at what the index and the
spool hold.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.dsutils import encode

from dicomnode.config import CompletionConfig
from dicomnode.domain import Peer, ReceivedInstance, StoreOutcome
from dicomnode.errors import (
    DatasetTooLargeError,
    StorageError,
    UIDMismatchError,
    UnreadableDatasetError,
)
from dicomnode.phantom.ct import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.database import Database
from dicomnode.store.index import Index
from dicomnode.store.ingest import Ingest
from dicomnode.store.spool import PendingFile, Spool

_EXPLICIT = "1.2.840.10008.1.2.1"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PEER = Peer(calling_ae="SCU", called_ae="NODE", host="127.0.0.1", port=1)


class _Completion:
    """The completion tracker's part that ingest calls."""

    def watch(self, series_id: int, deadline: Any) -> None:
        pass

    def association_released(self, association_id: int) -> None:
        pass


@pytest.fixture
def parts(tmp_path: Path, database_url: str) -> Iterator[tuple[Ingest, Spool, Index]]:
    spool = Spool(tmp_path / "spool")
    spool.open()
    database = Database(database_url)
    database.create_schema()
    index = Index(database)
    index.open()
    ingest = Ingest(spool, index, _Completion(), CompletionConfig())  # type: ignore[arg-type]  # a stand-in
    try:
        yield ingest, spool, index
    finally:
        ingest.close()
        index.close()


def _instances(count: int = 2) -> list[ReceivedInstance]:
    spec = CTPhantomSpec(slices=count, rows=8, columns=8, seed=5)
    instances = []
    for ds in ct_phantom_datasets(spec):
        data = encode(ds, False, True)
        assert data is not None
        instances.append(
            ReceivedInstance(
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                transfer_syntax_uid=_EXPLICIT,
                dataset=memoryview(data),
                peer=_PEER,
                association_id=0,
            )
        )
    return instances


def test_an_instance_is_stored_whole_and_indexed(parts: tuple[Ingest, Spool, Index]) -> None:
    ingest, spool, index = parts
    instance = _instances(1)[0]
    stored = ingest.store(instance)
    assert stored.outcome is StoreOutcome.STORED
    names = list(spool.names())
    assert len(names) == 1
    content = spool.path(names[0]).read_bytes()
    assert content[128:132] == b"DICM"
    assert content.endswith(bytes(instance.dataset))
    assert index.count_instances() == 1
    assert index.spool_names() == set(names)


def test_the_index_commits_only_once_the_file_is_written(
    parts: tuple[Ingest, Spool, Index], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, spool, index = parts
    started, release = threading.Event(), threading.Event()
    sync = spool.sync

    def held_sync(pending: PendingFile) -> None:
        started.set()
        assert release.wait(30)
        sync(pending)

    monkeypatch.setattr(spool, "sync", held_sync)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(ingest.store(_instances(1)[0])))
    worker.start()
    try:
        assert started.wait(30)
        worker.join(timeout=0.5)  # time enough to prepare and commit, were it allowed to
        assert worker.is_alive(), "the store returned before its file was written"
        assert index.count_instances() == 0
        assert list(spool.names()) == []
    finally:
        release.set()
        worker.join(timeout=30)
    assert outcome and outcome[0].outcome is StoreOutcome.STORED
    assert index.count_instances() == 1
    assert len(list(spool.names())) == 1


@pytest.mark.parametrize(
    "failing",
    ["os.fsync", "os.rename", "_fsync_dir"],
    ids=["file sync", "rename", "folder sync (after the rename)"],
)
def test_a_failed_file_step_rolls_the_index_back_and_leaves_no_file(
    parts: tuple[Ingest, Spool, Index], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    ingest, spool, index = parts

    def fail(*args: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(f"dicomnode.store.spool.{failing}", fail)
    with pytest.raises(StorageError):
        ingest.store(_instances(1)[0])
    assert index.count_instances() == 0
    assert index.list_series() == []  # the series row went with the transaction
    assert list(spool.names()) == []
    assert list(spool.tmp.iterdir()) == []
    monkeypatch.undo()
    assert ingest.store(_instances(1)[0]).outcome is StoreOutcome.STORED  # and it goes on


def test_a_refused_dataset_leaves_no_file(parts: tuple[Ingest, Spool, Index]) -> None:
    ingest, spool, index = parts
    first, second = _instances(2)
    mismatched = ReceivedInstance(
        sop_class_uid=first.sop_class_uid,
        sop_instance_uid=second.sop_instance_uid,  # not the dataset's
        transfer_syntax_uid=first.transfer_syntax_uid,
        dataset=first.dataset,
        peer=_PEER,
        association_id=0,
    )
    with pytest.raises(UIDMismatchError):
        ingest.store(mismatched)
    assert list(spool.names()) == []
    assert list(spool.tmp.iterdir()) == []
    assert index.count_instances() == 0


def test_a_resent_instance_keeps_one_file(parts: tuple[Ingest, Spool, Index]) -> None:
    ingest, spool, index = parts
    instance = _instances(1)[0]
    assert ingest.store(instance).outcome is StoreOutcome.STORED
    assert ingest.store(instance).outcome is StoreOutcome.DUPLICATE
    assert len(list(spool.names())) == 1
    assert index.spool_names() == set(spool.names())


def test_a_structurally_broken_dataset_is_refused_and_leaves_no_file(
    parts: tuple[Ingest, Spool, Index],
) -> None:
    ingest, spool, index = parts
    instance = _instances(1)[0]
    data = bytes(instance.dataset)
    patient_id = data.index(b"\x10\x00\x20\x00LO")  # PatientID's VR code made 'ZZ'
    broken = data[: patient_id + 4] + b"ZZ" + data[patient_id + 6 :]
    with pytest.raises(UnreadableDatasetError, match=r"\(0010,0020\) VR 'ZZ'"):
        ingest.store(replace(instance, dataset=memoryview(broken)))
    assert list(spool.names()) == []
    assert list(spool.tmp.iterdir()) == []
    assert index.count_instances() == 0


def _deflated(instance: ReceivedInstance) -> ReceivedInstance:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = deflater.compress(instance.dataset) + deflater.flush()
    return replace(instance, transfer_syntax_uid=_DEFLATED, dataset=memoryview(data))


def test_a_deflated_dataset_is_read_inflated_and_stored_as_received(
    parts: tuple[Ingest, Spool, Index],
) -> None:
    ingest, spool, index = parts
    instance = _deflated(_instances(1)[0])
    assert ingest.store(instance).outcome is StoreOutcome.STORED
    (name,) = spool.names()
    assert spool.path(name).read_bytes().endswith(bytes(instance.dataset))
    assert index.count_instances() == 1


def test_a_dataset_inflating_past_the_limit_is_refused(tmp_path: Path, database_url: str) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    database = Database(database_url)
    database.create_schema()
    index = Index(database)
    index.open()
    ingest = Ingest(
        spool,
        index,
        _Completion(),  # type: ignore[arg-type]  # a stand-in
        CompletionConfig(),
        max_inflated_bytes=1024,
    )
    try:
        with pytest.raises(DatasetTooLargeError, match="max_inflated_bytes"):
            ingest.store(_deflated(_instances(1)[0]))  # ~1.5 KiB inflated
        assert list(spool.names()) == []
        assert index.count_instances() == 0
    finally:
        ingest.close()
        index.close()
