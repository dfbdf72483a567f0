"""Series completion: settle after release, split associations, late versions, restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.store.index import Index
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def sendable(paths: tuple[Path, ...] | list[Path]) -> list[SendableFile]:
    files = [inspect_file(p) for p in paths]
    assert all(isinstance(f, SendableFile) for f in files)
    return files  # type: ignore[return-value]


def send(paths: tuple[Path, ...] | list[Path], port: int) -> None:
    results = send_files(sendable(paths), parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


@pytest.fixture
def phantom(tmp_path: Path) -> tuple[Path, ...]:
    return write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=12, rows=64, columns=64)).paths


def wait_complete(index: Index, series_uid: str, version: int = 1, timeout: float = 20) -> None:
    def done() -> bool:
        found = index.find_series(series_uid)
        return found is not None and found.state == "complete" and found.version == version

    poll_until(done, timeout=timeout, what=f"series version {version} to complete")


def test_series_over_one_association_completes_on_settle_after_release(
    node: Node, phantom: tuple[Path, ...]
) -> None:
    send(phantom, node.scp.port)
    (series,) = node.index.list_series()
    wait_complete(node.index, series.series_uid)

    (completion,) = node.index.completions(series.id)
    (association,) = node.index.associations()
    assert completion.reason == "settle"
    assert completion.instance_count == 12
    assert association.state == "released"
    assert association.ended_at is not None
    settle = timedelta(seconds=node.config.completion.settle_seconds)
    assert completion.completed_at >= association.ended_at + settle


def test_series_split_over_associations_with_short_gaps_completes_once(
    node_factory: Callable[..., Node], phantom: tuple[Path, ...]
) -> None:
    # Settle is long enough that the gaps between the three associations stay inside it.
    node = node_factory(completion={"settle_seconds": 2.0, "quiet_seconds": 6.0})
    for part in (phantom[:4], phantom[4:8], phantom[8:]):
        send(part, node.scp.port)
    (series,) = node.index.list_series()
    wait_complete(node.index, series.series_uid)

    (completion,) = node.index.completions(series.id)
    assert completion.instance_count == 12
    assert completion.version == 1
    assert len(node.index.associations()) == 3
    assert {i.series_version for i in node.index.instances_of(series.id)} == {1}


def test_an_instance_after_completion_opens_a_new_version(
    node: Node, phantom: tuple[Path, ...]
) -> None:
    send(phantom[:-1], node.scp.port)
    (series,) = node.index.list_series()
    wait_complete(node.index, series.series_uid)

    send(phantom[-1:], node.scp.port)
    wait_complete(node.index, series.series_uid, version=2)

    first, second = node.index.completions(series.id)
    assert (first.version, first.instance_count) == (1, 11)
    assert (second.version, second.instance_count) == (2, 12)
    versions = [i.series_version for i in node.index.instances_of(series.id)]
    assert versions.count(1) == 11
    assert versions.count(2) == 1


def test_quiet_period_completes_a_series_whose_association_was_aborted(
    node_factory: Callable[..., Node], phantom: tuple[Path, ...]
) -> None:
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    node = node_factory(completion={"quiet_seconds": 1.5, "settle_seconds": 60.0})
    ae = AE(ae_title="ABORTER")
    ae.requested_contexts = [build_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")]
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOMNODE")
    assert assoc.is_established
    assert assoc.send_c_store(phantom[0]).Status == 0
    assoc.abort()  # an abort is not "done": only the quiet clock may complete it

    (series,) = node.index.list_series()
    wait_complete(node.index, series.series_uid)
    (completion,) = node.index.completions(series.id)
    assert completion.reason == "quiet"


def test_a_pending_series_survives_sigkill_and_completes_after_restart(
    node_process: Callable[..., NodeProcess], phantom: tuple[Path, ...]
) -> None:
    # Long clocks, so the series is surely still pending when the node is killed.
    node = node_process(completion={"quiet_seconds": 8.0, "settle_seconds": 4.0}).start()
    send(phantom, node.port)
    index = Index(node.config.database_url)
    poll_until(
        lambda: [a.state for a in index.associations()] == ["released"],
        timeout=10,
        what="the node to record the release",
    )
    (series,) = index.list_series()
    assert series.deadline_at is not None
    assert series.state == "receiving"
    node.kill()

    node.start()
    wait_complete(index, series.series_uid, timeout=30)
    (completion,) = index.completions(series.id)
    assert completion.instance_count == 12
    assert completion.reason == "settle"
    # The restarted node kept the deadline from before the crash: not earlier.
    assert completion.completed_at >= series.deadline_at
    assert "series_completion_resumed" in node.logs()
    index.close()
