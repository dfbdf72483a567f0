"""``record_instance`` remembers the series rows it wrote, and notices when they change.

Each case lets something else change a remembered row (a completion, another writer on
the same database, a rolled-back transaction) and checks that the next instance is
counted and versioned as if the row had been read afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dicomnode.config import CompletionConfig
from dicomnode.domain import Peer, ReceivedInstance, StoreOutcome
from dicomnode.errors import StorageError
from dicomnode.store.database import Database
from dicomnode.store.header import InstanceHeader, JSONValue
from dicomnode.store.index import Completion, Index, Recorded
from dicomnode.store.spool import SpooledFile

_PEER = Peer(calling_ae="SCU", called_ae="NODE", host="127.0.0.1", port=1)
_SERIES = "1.2.826.0.1.3680043.10.9.1"
_START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_POLICY = CompletionConfig(quiet_seconds=5, settle_seconds=2, max_wait_seconds=60).policy_for


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


@pytest.fixture
def index(url: str) -> Iterator[Index]:
    index = Index(Database(url))
    index.open()
    try:
        yield index
    finally:
        index.close()


def _record(
    index: Index,
    number: int,
    seconds: float = 0,
    copy: int = 0,
    texts: dict[str, str] | None = None,
    **kwargs: object,
) -> Recorded:
    uid = f"{_SERIES}.{number}"
    attributes: dict[str, JSONValue] = {"Modality": "CT", "SeriesNumber": number % 2}
    attributes.update(texts or {})
    header = InstanceHeader(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=uid,
        study_uid="1.2.826.0.1.3680043.10.9",
        series_uid=_SERIES,
        modality=str(attributes["Modality"]),
        attributes=attributes,
    )
    received = ReceivedInstance(
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=uid,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        dataset=b"",
        peer=_PEER,
        association_id=0,
    )
    spooled = SpooledFile(
        name=f"{copy:02x}/{number:032x}.dcm", size=10, sha256=f"{copy:02x}{number:062x}"
    )
    now = _START + timedelta(seconds=seconds)
    return index.record_instance(header, spooled, received, now, _POLICY, **kwargs)  # type: ignore[arg-type]  # before_commit


def _series(index: Index) -> tuple[int, int, str, list[object]]:
    summary = index.find_series(_SERIES)
    assert summary is not None
    attributes = index.series_attributes(summary.id)
    return summary.instance_count, summary.version, summary.state, attributes["SeriesNumber"]


def test_instances_of_a_series_are_counted(index: Index) -> None:
    for number in range(1, 6):
        assert _record(index, number).outcome is StoreOutcome.STORED
    assert _series(index) == (5, 1, "receiving", [1, 0])


def test_a_completed_series_opens_a_new_version(index: Index) -> None:
    first = _record(index, 1)
    _record(index, 2)
    done = index.complete_if_due(first.series_id, _START + timedelta(hours=1), _POLICY)
    assert isinstance(done, Completion)
    late = _record(index, 3, seconds=3600)
    assert late.opened
    assert _series(index)[:3] == (3, 2, "receiving")


def test_another_writer_s_instances_are_counted(index: Index, url: str) -> None:
    _record(index, 1)
    other = Index(Database(url))  # a second index on the same database
    try:
        _record(other, 2)
        _record(other, 3)
    finally:
        other.close()
    _record(index, 4)
    assert _series(index)[0] == 4


def test_a_rolled_back_write_is_not_remembered(index: Index) -> None:
    _record(index, 1)

    def file_failed() -> None:
        raise StorageError("cannot write to the spool: Input/output error")

    with pytest.raises(StorageError):
        _record(index, 2, before_commit=file_failed)
    assert _series(index)[0] == 1
    _record(index, 3)
    assert _series(index)[0] == 2
    assert index.count_instances() == 2


def test_a_resent_instance_is_a_duplicate_and_not_counted(index: Index) -> None:
    _record(index, 1)
    assert _record(index, 1).outcome is StoreOutcome.DUPLICATE
    assert _record(index, 2).outcome is StoreOutcome.STORED
    assert _series(index)[0] == 2


def test_a_resent_instance_with_other_bytes_replaces_the_first(index: Index) -> None:
    first = _record(index, 1)
    _record(index, 2)
    replaced = _record(index, 1, copy=1)
    assert replaced.outcome is StoreOutcome.REPLACED
    assert replaced.instance_id == first.instance_id
    assert replaced.obsolete_file == f"00/{1:032x}.dcm"
    assert _series(index)[0] == 2
    assert index.spool_names() == {f"01/{1:032x}.dcm", f"00/{2:032x}.dcm"}
    assert _record(index, 3).outcome is StoreOutcome.STORED  # and the next is new again
    assert _series(index)[0] == 3


def test_free_text_longer_than_its_column_is_cut_not_refused(index: Index) -> None:
    # SQLite would keep it whole; PostgreSQL refuses a VARCHAR(n) overrun outright.
    long = {"Modality": "M" * 40, "BodyPartExamined": "B" * 80, "SeriesDescription": "D" * 300}
    assert _record(index, 1, texts=long).outcome is StoreOutcome.STORED
    summary = index.find_series(_SERIES)
    assert summary is not None
    assert (summary.modality, summary.body_part) == ("M" * 16, "B" * 64)
    assert summary.description == "D" * 256
