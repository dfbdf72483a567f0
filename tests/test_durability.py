"""An acknowledgement is a promise: SIGKILL mid-transfer loses nothing the sender saw stored."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until

_SENDING = re.compile(r"Sending file: (?P<path>\S+)")
_SUCCESS = "Received Store Response (Success)"


def acknowledged_files(storescu_log: str) -> list[Path]:
    """Files for which storescu -v printed a success response."""
    current: Path | None = None
    acked: list[Path] = []
    for line in storescu_log.splitlines():
        if match := _SENDING.search(line):
            current = Path(match["path"])
        elif _SUCCESS in line and current is not None:
            acked.append(current)
            current = None
    return acked


def dataset_bytes(path: Path) -> bytes:
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


@pytest.mark.slow
def test_sigkill_during_a_300_instance_transfer_loses_no_acknowledged_instance(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=300, rows=128, columns=128))
    node = node_process().start()
    index = Index(node.config.database_url)
    log_path = tmp_path / "storescu.log"
    with log_path.open("w") as log:
        sender = subprocess.Popen(
            ["/usr/bin/storescu", "-v", "-aec", "DICOMNODE", "127.0.0.1", str(node.port),
             *map(str, series.paths)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        try:
            poll_until(
                lambda: index.count_instances() >= 100, timeout=60, what="100 stored instances"
            )
            node.kill()  # mid-transfer, without warning
            sender.wait(timeout=60)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
    acked = acknowledged_files(log_path.read_text())
    assert 100 <= len(acked) < 300, "the kill must land in the middle of the transfer"

    node.start()  # recovery: stale temporary files and unacknowledged files go
    spool = Spool(node.config.spool_path)
    stored = {}
    for series_row in index.list_series():
        for row in index.instances_of(series_row.id):
            stored[row.sop_instance_uid] = row.spool_name
    for path in acked:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert uid in stored, f"{path.name} was acknowledged but is not indexed"
        spooled = spool.path(stored[uid])
        assert dataset_bytes(spooled) == dataset_bytes(path)
        pydicom.dcmread(spooled).pixel_array  # readable, pixel data and all  # noqa: B018
    # The index and the spool agree exactly: no orphan files, no dangling rows.
    assert set(spool.names()) == index.spool_names()
    assert list(spool.tmp.iterdir()) == []
    index.close()
