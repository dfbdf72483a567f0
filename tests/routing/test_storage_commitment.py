"""Proof of delivery by Storage Commitment (PS3.4 Annex J) against Orthanc as the archive.

Orthanc answers the node's N-ACTION with an N-EVENT-REPORT on an association of its own
to the node's SCP, so the test declares the node to it as a modality.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.outbox.queue import SendSummary
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.orthanc import Orthanc
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.process import poll_until

pytestmark = pytest.mark.usefixtures("database_url")

RULES = """
- name: ct-to-pacs
  match: {Modality: CT}
  forward_to: [pacs]
"""


def start(
    node_factory: Callable[..., Node],
    pacs: Orthanc,
    tmp_path: Path,
    *,
    declared: bool = True,
    timeout: float = 60,
    report_port: int | None = None,
) -> Node:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(textwrap.dedent(RULES))
    pacs_destination = {
        "ae_title": pacs.aet,
        "host": "127.0.0.1",
        "port": pacs.dicom_port,
        "storage_commitment": True,
        "commitment_timeout_seconds": timeout,
    }
    node = node_factory(destinations={"pacs": pacs_destination})
    assert node.scp.port is not None
    if declared:
        # Orthanc sends its report to this address (a refusing one: the report is lost).
        port = node.scp.port if report_port is None else report_port
        pacs.put_modality("node", (node.config.node.ae_title, "127.0.0.1", port))
    return node


def send_phantom(node: Node, folder: Path) -> list[Path]:
    spec = CTPhantomSpec(slices=3, rows=16, columns=16, seed=7)
    paths = list(write_ct_phantom(folder, spec).paths)
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
    assert all(r.ok for r in results), [r.note for r in results]
    return paths


def the_send(node: Node, commitment: str) -> SendSummary:
    def found() -> SendSummary | None:
        sends = node.outbox.queue.list_sends()
        return sends[0] if sends and sends[0].commitment == commitment else None

    poll_until(lambda: found() is not None, timeout=60, what=f"a send {commitment}")
    summary = found()
    assert summary is not None
    return summary


def test_a_forward_with_storage_commitment_ends_committed(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    with Orthanc() as pacs:
        node = start(node_factory, pacs, tmp_path)
        send_phantom(node, tmp_path / "ct")
        send = the_send(node, "committed")
        assert len(pacs.instances()) == 3
    assert (send.state, send.sent_count, send.reason) == ("done", 3, None)


def test_an_instance_the_archive_lost_is_reported_and_the_send_fails(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    with Orthanc() as pacs:
        node = start(node_factory, pacs, tmp_path)
        worker: Any = node.outbox._workers["pacs"]  # the seam between delivery and request
        request = worker._commitment

        def lose_one_then_request(uid: str, references: list[tuple[str, str]]) -> None:
            # After every C-STORE landed and before the N-ACTION: no race with Orthanc.
            pacs.delete(f"/instances/{pacs.instances()[0]}")
            request(uid, references)

        worker._commitment = lose_one_then_request
        send_phantom(node, tmp_path / "ct")
        send = the_send(node, "failed")
    assert send.state == "failed"
    assert send.sent_count == 2
    assert send.reason is not None
    assert "1 instance(s) not committed" in send.reason, send.reason


def test_an_archive_that_refuses_the_request_leaves_the_send_delivered_but_unproven(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    # Orthanc answers no N-ACTION from a caller it does not know as a modality.
    with Orthanc() as pacs:
        node = start(node_factory, pacs, tmp_path, declared=False)
        send_phantom(node, tmp_path / "ct")
        send = the_send(node, "unrequested")
    assert (send.state, send.sent_count) == ("done", 3)
    assert send.reason is not None
    assert send.reason.startswith("storage commitment not requested"), send.reason


def test_no_report_within_the_timeout_leaves_the_send_delivered_and_says_so(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    # Orthanc accepts the request, then cannot reach the node to report: nothing comes.
    with Orthanc() as pacs:
        node = start(node_factory, pacs, tmp_path, timeout=2, report_port=refusing_port())
        send_phantom(node, tmp_path / "ct")
        send = the_send(node, "timed_out")
    assert (send.state, send.sent_count) == ("done", 3)
    assert send.reason is not None
    assert "commitment timed out" in send.reason, send.reason
