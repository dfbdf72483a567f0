"""Delivery is at least once: a node killed mid-forward resumes and completes the send."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomnode.outbox.queue import OutboxQueue
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.database import Database
from dicomnode.testing.dcmtk import StoreSCP, storescu
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until


@pytest.mark.slow
@pytest.mark.usefixtures("database_url")  # on every index backend
def test_sigkill_mid_forward_still_delivers_all_300_instances(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=300, rows=256, columns=256))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "forward.yaml").write_text(
        "- {name: forward-all, match: {Modality: CT}, forward_to: [archive]}\n"
    )
    with StoreSCP(ae_title="ARCHIVE") as archive:
        node = node_process(
            rules_dir=str(rules),
            destinations={
                "archive": {
                    "ae_title": "ARCHIVE",
                    "host": "127.0.0.1",
                    "port": archive.port,
                    "retry": {"initial_seconds": 0.5, "max_seconds": 1.0},
                }
            },
            completion={"settle_seconds": 0.5},
        ).start()
        sent = storescu(list(series.paths), ae_title="DICOMNODE", port=node.port)
        assert sent.returncode == 0, sent.stdout[-2000:]
        # Kill the node once the forward is under way, well before it ends.
        poll_until(lambda: len(archive.files()) >= 30, timeout=60, what="forwarding to start")
        node.kill()
        assert len(archive.files()) < 300, "the kill must land in the middle of the forward"

        node.start()
        poll_until(
            lambda: _distinct_uids(archive) == 300, timeout=120, what="all 300 at the archive"
        )
        database = Database(node.config.database_url)
        poll_until(
            lambda: [s.state for s in OutboxQueue(database).list_sends()] == ["done"],
            timeout=30,
            what="the send to be done",
        )
        database.close()
        expected = {
            pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.paths
        }
        assert _uids(archive) == expected
    assert "sends_resumed" in node.logs()


def _uids(archive: StoreSCP) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in archive.files()}


def _distinct_uids(archive: StoreSCP) -> int:
    return len(_uids(archive))
