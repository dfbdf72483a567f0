"""The spool writes atomically, names files itself and cleans up after crashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dicomnode.errors import SpoolFullError, StorageError
from dicomnode.store.spool import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.open()
    return spool


def test_a_written_file_holds_header_and_dataset(spool: Spool) -> None:
    spooled = spool.write(b"HEADER", b"DATASET")
    path = spool.path(spooled.name)
    assert path.read_bytes() == b"HEADERDATASET"
    assert spooled.size == 13
    assert spooled.sha256 == hashlib.sha256(b"DATASET").hexdigest()
    assert path.is_relative_to(spool.objects)
    assert list(spool.tmp.iterdir()) == []
    assert list(spool.names()) == [spooled.name]


def test_names_are_the_spools_own_and_unique(spool: Spool) -> None:
    names = {spool.write(b"", b"same bytes").name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.endswith(".dcm")
        assert "/" in name and ".." not in name


def test_stale_temporary_files_are_removed_at_open(spool: Spool) -> None:
    (spool.tmp / "crashed.part").write_bytes(b"half")
    assert Spool(spool.root).open() == 1
    assert list(spool.tmp.iterdir()) == []


@pytest.mark.parametrize(("errno", "error"), [(28, SpoolFullError), (5, StorageError)])
def test_a_failed_write_leaves_nothing_behind(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, errno: int, error: type[Exception]
) -> None:
    def failing_write(fd: int, data: object) -> int:
        raise OSError(errno, os.strerror(errno))

    monkeypatch.setattr("dicomnode.store.spool.os.write", failing_write)
    with pytest.raises(error):
        spool.write(b"H", b"D")
    assert list(spool.tmp.iterdir()) == []
    assert list(spool.names()) == []


def test_remove_deletes_a_file(spool: Spool) -> None:
    spooled = spool.write(b"", b"x")
    spool.remove(spooled.name)
    assert not spool.path(spooled.name).exists()
