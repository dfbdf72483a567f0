"""A PACS pushes studies to the node, the way its auto-forward does.

Acceptance: "Orthanc, started by the test as a PACS on loopback, pushes a study to the
node through its REST API (/modalities/{name}/store), the way a PACS auto-forward does;
the node stores it all."
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSeries, CTPhantomSpec, write_ct_phantom
from dicomnode.testing import LOOPBACK, Orthanc, poll_until

MODALITY = "dicomnode"  # the node's name in Orthanc's DicomModalities


@pytest.fixture
def pacs(node: Node) -> Iterator[Orthanc]:
    """Orthanc started with the node declared as modality ``dicomnode``."""
    node_ae = (node.config.node.ae_title, LOOPBACK, node.scp.port)
    with Orthanc(aet="PACS", modalities={MODALITY: node_ae}) as orthanc:
        yield orthanc


@pytest.fixture
def two_series_study(tmp_path: Path) -> list[CTPhantomSeries]:
    """A synthetic study of two small CT series (12 and 7 slices), one study UID."""
    study_uid = "1.2.826.0.1.3680043.8.498.7.99.1"
    shapes = [(1, 12), (2, 7)]  # (series number = seed, slices)
    return [
        write_ct_phantom(
            tmp_path / f"series{number}",
            CTPhantomSpec(slices=slices, rows=64, columns=64, seed=number, series_number=number),
            study_instance_uid=study_uid,
        )
        for number, slices in shapes
    ]


def dataset_bytes(path: Path) -> bytes:
    """A file's dataset part: everything after its File Meta Information."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def upload(pacs: Orthanc, files: list[Path]) -> str:
    """Store files in the PACS over REST; the Orthanc ID of their (one) study."""
    studies = {pacs.get_json(f"/instances/{pacs.upload(p)}/study")["ID"] for p in files}
    (study,) = studies
    return str(study)


def push(pacs: Orthanc, study: str) -> dict[str, Any]:
    """POST /modalities/dicomnode/store, as the PACS's auto-forward would."""
    return pacs.store_to_modality(MODALITY, [study], synchronous=True)


def wait_until_complete(node: Node, series_uid: str) -> None:
    """Release, then the settle clock (1 s in these tests), completes the series."""

    def complete() -> bool:
        found = node.index.find_series(series_uid)
        return found is not None and found.state == "complete"

    poll_until(complete, timeout=20, what=f"series {series_uid} to complete")


def test_a_pushed_study_is_stored_bit_identical_and_completes(
    node: Node, pacs: Orthanc, real_ct_images: list[Path]
) -> None:
    study = upload(pacs, real_ct_images)

    answer = push(pacs, study)

    assert (answer["InstancesCount"], answer["FailedInstancesCount"]) == (28, 0), answer
    assert (answer["RemoteAet"], answer["ParentResources"]) == ("DICOMNODE", [study])
    (series,) = node.index.list_series()
    assert (series.modality, series.instance_count) == ("CT", 28)
    stored = {row.sop_instance_uid: row for row in node.index.instances_of(series.id)}
    for source in real_ct_images:
        meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
        row = stored[str(meta.MediaStorageSOPInstanceUID)]
        # StorageCompression is off: Orthanc keeps the uploaded file and sends its
        # dataset in the syntax it came in, which the node keeps byte for byte.
        assert row.transfer_syntax_uid == str(meta.TransferSyntaxUID)
        assert dataset_bytes(node.spool.path(row.spool_name)) == dataset_bytes(source), source
    wait_until_complete(node, series.series_uid)
    (completion,) = node.index.completions(series.id)
    assert completion.instance_count == 28


def test_a_study_of_two_series_pushed_in_one_call_completes_both(
    node: Node, pacs: Orthanc, two_series_study: list[CTPhantomSeries]
) -> None:
    files = [path for series in two_series_study for path in series.paths]
    study = upload(pacs, files)

    answer = push(pacs, study)

    assert (answer["InstancesCount"], answer["FailedInstancesCount"]) == (19, 0), answer
    received = {s.series_uid: s for s in node.index.list_series()}
    expected = {s.series_instance_uid: len(s.paths) for s in two_series_study}
    assert {uid: s.instance_count for uid, s in received.items()} == expected
    assert {s.study_uid for s in received.values()} == {two_series_study[0].study_instance_uid}
    stored = {
        row.sop_instance_uid: node.spool.path(row.spool_name)
        for series in received.values()
        for row in node.index.instances_of(series.id)
    }
    for source in files:
        uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(stored[uid]) == dataset_bytes(source), source
    for uid, count in expected.items():
        wait_until_complete(node, uid)
        (completion,) = node.index.completions(received[uid].id)
        assert completion.instance_count == count
