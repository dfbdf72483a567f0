"""Retention deletes what is delivered and old, never what may still be needed; the disk
high-water mark refuses new instances until space returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.presentation import build_context

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets, write_ct_phantom
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

# Retention shortened to a few seconds; the scheduler is bypassed with run_once().
SHORT = {"retention_hours": 2 / 3600}


def send(paths: tuple[Path, ...], port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    assert all(r.ok for r in send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}")))


def write_good_and_bad_rules(tmp_path: Path) -> None:
    """GOOD series forward to ``archive``, BAD ones to ``gone`` (a destination that fails)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "- {name: ok, match: {SeriesDescription: GOOD}, forward_to: [archive]}\n"
        "- {name: bad, match: {SeriesDescription: BAD}, forward_to: [gone]}\n"
    )


def destination(ae: str, port: int, **retry: float) -> dict[str, object]:
    return {
        "ae_title": ae,
        "host": "127.0.0.1",
        "port": port,
        "retry": {"initial_seconds": 0.3, "max_seconds": 0.5, **retry},
    }


def test_retention_deletes_a_delivered_series_and_keeps_one_whose_send_failed(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_good_and_bad_rules(tmp_path)
    with StoreSCP(ae_title="ARCHIVE") as archive:
        node = node_factory(
            storage=SHORT,
            destinations={
                "archive": destination("ARCHIVE", archive.port),
                "gone": destination("GONE", refusing_port(), max_age_seconds=1),
            },
        )
        good = write_ct_phantom(
            tmp_path / "good",
            CTPhantomSpec(slices=3, rows=16, columns=16, series_description="GOOD"),
        )
        bad = write_ct_phantom(
            tmp_path / "bad",
            CTPhantomSpec(slices=3, rows=16, columns=16, seed=2, series_description="BAD"),
        )
        send(good.paths + bad.paths, node.scp.port)
        poll_until(
            lambda: sorted(s.state for s in node.outbox.queue.list_sends()) == ["done", "failed"],
            timeout=60,
            what="one send done and one failed",
        )
    before = set(node.spool.names())
    assert len(before) == 6
    poll_until(lambda: node.retention.run_once().series >= 1, timeout=30, what="a purge")
    left = set(node.spool.names())
    series = {s.description: s for s in node.index.list_series()}
    bad_files = {r.spool_name for r in node.index.instances_of(series["BAD"].id)}
    good_files = {r.spool_name for r in node.index.instances_of(series["GOOD"].id)}
    assert left == bad_files, "the failed-and-retryable series keeps its files"
    assert not (good_files & left), "the delivered series is gone from the spool"
    assert node.index.spool_names() == left
    assert node.retention.run_once().series == 0


def test_retention_never_deletes_before_the_retention_period(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    node = node_factory(storage={"retention_hours": 1.0})
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    send(series.paths, node.scp.port)
    (row,) = node.index.list_series()
    poll_until(
        lambda: node.index.find_series(row.series_uid).state == "complete",  # type: ignore[union-attr]
        timeout=30,
        what="completion",
    )
    assert node.retention.run_once().series == 0
    assert len(list(node.spool.names())) == 2


def store(port: int, dataset: Dataset) -> int:
    ae = AE(ae_title="TEST")
    ae.requested_contexts = [
        build_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    ]
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


def test_above_the_high_water_mark_new_instances_get_0xa700_until_space_returns(
    node_factory: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = node_factory(storage={"min_free_bytes": 1 << 62})  # more than any disk has
    datasets = ct_phantom_datasets(CTPhantomSpec(slices=2, rows=16, columns=16))
    assert store(node.scp.port, next(datasets)) == 0xA700
    assert not node.disk.accepting()
    # Space returns: the guard looks again at its next check (at most a second later).
    monkeypatch.setattr(node.disk, "_min_free", 0)
    poll_until(node.disk.accepting, timeout=5, what="the guard to see free space")
    assert store(node.scp.port, next(datasets)) == 0
