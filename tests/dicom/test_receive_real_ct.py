"""DCMTK storescu sends the real Philips CT series to a running node.

On both receiving paths: the node's adaptations of pynetdicom (in this process) and
pynetdicom's stock path (a node process started with ``DICOMNODE_PYNETDICOM_STOCK=1``;
the adaptation is process-wide, so it cannot be switched off in here).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from dicomnode.dicom import adapt
from dicomnode.node import Node
from dicomnode.store.index import Index
from dicomnode.store.spool import Spool
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until

STORESCU = "/usr/bin/storescu"


def dataset_bytes(path: Path) -> bytes:
    """A file's dataset part: everything after its File Meta Information."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def storescu(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [STORESCU, "-v", *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@dataclass(frozen=True)
class Receiver:
    """What these tests look at in a node, in this process or its own."""

    port: int
    index: Index
    spool: Spool


@pytest.fixture(params=["adapted", "stock"])
def receiver(
    request: pytest.FixtureRequest,
    node_process: Callable[..., NodeProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Receiver]:
    if request.param == "adapted":
        node: Node = request.getfixturevalue("node")
        assert adapt.installed()
        yield Receiver(node.scp.port, node.index, node.spool)
        return
    monkeypatch.setenv(adapt.STOCK_VARIABLE, "1")
    process = node_process().start()
    index = Index(process.config.database_url)
    try:
        yield Receiver(process.port, index, Spool(process.config.spool_path))
    finally:
        index.close()
    assert "pynetdicom_stock_path" in process.logs()


def test_real_ct_series_is_stored_bit_identical_and_completes(
    receiver: Receiver, real_ct_dir: Path, real_ct_images: list[Path]
) -> None:
    node = receiver
    # --no-halt: storescu goes on after the DIRFILE's refusal, as a PACS would.
    result = storescu(
        "-aec", "DICOMNODE", "-aet", "MODALITY", "--no-halt", "+sd", "+r",
        "127.0.0.1", str(node.port), str(real_ct_dir),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert output.count("Received Store Response (Success)") == len(real_ct_images) == 28

    series = node.index.list_series()
    assert len(series) == 1
    (only,) = series
    assert only.modality == "CT"
    assert only.instance_count == 28
    assert only.description == "STD BRAIN 5MM"

    stored = node.index.instances_of(only.id)
    by_uid = {row.sop_instance_uid: row for row in stored}
    for source in real_ct_images:
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        spooled = node.spool.path(by_uid[uid].spool_name)
        assert dataset_bytes(spooled) == dataset_bytes(source), source.name
        assert spooled.parent.parent == node.spool.objects
        assert uid not in str(spooled)

    poll_until(
        lambda: node.index.find_series(only.series_uid).state == "complete",  # type: ignore[union-attr]
        timeout=10,
        what="the series to complete after release + settle",
    )
    # One completion, in the durable queue the router consumes (it may have already).
    (completion,) = node.index.completions(only.id)
    assert (completion.version, completion.instance_count) == (1, 28)


def test_dirfile_gets_a_clear_refusal_without_disturbing_the_series(
    receiver: Receiver, real_ct_dir: Path
) -> None:
    node = receiver
    dirfile = real_ct_dir / "DIRFILE"
    image = real_ct_dir / "I10"
    result = storescu(
        "-aec", "DICOMNODE", "--no-halt", "127.0.0.1", str(node.port), str(dirfile), str(image)
    )  # fmt: skip
    output = result.stdout + result.stderr
    # The vendor directory record is not a storable instance: 0xC000 with a reason.
    assert "Received Store Response (Error: CannotUnderstand)" in output, output
    assert "Received Store Response (Success)" in output
    (series,) = node.index.list_series()
    assert series.instance_count == 1
    assert node.index.count_instances() == 1
