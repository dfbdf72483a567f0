"""Routing and the outbox, end to end: rules forward series to real DICOM peers."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from dicomnode.admin import AuditLog
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import config_beside, run_dicomnode
from dicomnode.testing.dcmtk import StoreSCP, storescu
from dicomnode.testing.orthanc import Orthanc
from dicomnode.testing.ports import HeldPort
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}


def write_rules(folder: Path, text: str, name: str = "rules.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def destination(ae: str, port: int, **retry: Any) -> dict[str, Any]:
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "retry": {**FAST_RETRY, **retry}}


def dataset_bytes(data: bytes) -> bytes:
    """The dataset part of a DICOM file's bytes (after preamble, DICM and group 0002)."""
    stream = BytesIO(data)
    read_preamble(stream, force=False)
    _read_file_meta_info(stream)
    return data[stream.tell() :]


def send(paths: tuple[Path, ...] | list[Path], port: int) -> None:
    files = [inspect_file(p) for p in paths]
    results = send_files(
        [f for f in files if isinstance(f, SendableFile)],
        parse_address(f"DICOMNODE@127.0.0.1:{port}"),
    )
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def phantom(folder: Path, description: str, seed: int, study_uid: str | None = None) -> Any:
    spec = CTPhantomSpec(
        slices=6, rows=32, columns=32, seed=seed, series_description=description,
        series_number=seed + 1,
    )  # fmt: skip
    return write_ct_phantom(folder, spec, study_instance_uid=study_uid)


def sends_in_state(node: Node, state: str) -> list[Any]:
    return node.outbox.queue.list_sends(state)


def test_the_real_ct_is_forwarded_to_orthanc_complete_and_bit_identical(
    node_factory: Callable[..., Node], real_ct_images: list[Path], tmp_path: Path
) -> None:
    write_rules(
        tmp_path / "rules",
        """
        - name: ct-to-pacs
          match: {Modality: CT}
          forward_to: [pacs]
        """,
    )
    with Orthanc() as pacs:
        node = node_factory(destinations={"pacs": destination(pacs.aet, pacs.dicom_port)})
        result = storescu(real_ct_images, ae_title="DICOMNODE", port=node.scp.port)
        assert result.returncode == 0, result.stdout
        poll_until(lambda: len(pacs.instances()) == 28, timeout=60, what="28 instances in Orthanc")
        poll_until(
            lambda: len(sends_in_state(node, "done")) == 1, timeout=30, what="the send to be done"
        )
        by_uid = {}
        for orthanc_id in pacs.instances():
            data = pacs.instance_file(orthanc_id)
            uid = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
            by_uid[uid.SOPInstanceUID] = data
        for source in real_ct_images:
            uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
            assert dataset_bytes(by_uid[uid]) == dataset_bytes(source.read_bytes()), source.name
    (series,) = node.index.list_series()
    (decision,) = node.router.decisions(series.id)
    assert decision["matched_rules"] == ["ct-to-pacs"]


def test_two_rules_route_two_series_to_two_destinations_and_the_rest_is_unrouted(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rules(
        tmp_path / "rules",
        """
        - name: chest-to-pacs
          match:
            Modality: CT
            SeriesDescription: {regex: "(?i)chest"}
          forward_to: [pacs]
        - name: head-to-archive
          match:
            SeriesDescription: {regex: "(?i)head"}
          forward_to: [archive]
        """,
    )
    chest = phantom(tmp_path / "chest", "CT CHEST", seed=1)
    head = phantom(tmp_path / "head", "CT HEAD", seed=2, study_uid=chest.study_instance_uid)
    scout = phantom(tmp_path / "scout", "SCOUT", seed=3, study_uid=chest.study_instance_uid)
    with Orthanc() as pacs, StoreSCP(ae_title="ARCHIVE") as archive:
        node = node_factory(
            destinations={
                "pacs": destination(pacs.aet, pacs.dicom_port),
                "archive": destination(archive.ae_title, archive.port),
            }
        )
        send([*chest.paths, *head.paths, *scout.paths], node.scp.port)
        poll_until(lambda: len(pacs.instances()) == 6, timeout=60, what="the chest in Orthanc")
        archive.wait_for_files(6, timeout=60)
        received = {pydicom.dcmread(p).SeriesInstanceUID for p in archive.files()}
        assert received == {head.series_instance_uid}
        pacs_series = {pacs.instance_tags(i)["SeriesInstanceUID"] for i in pacs.instances()}
        assert pacs_series == {chest.series_instance_uid}
    decisions = {s.series_uid: node.router.decisions(s.id)[0] for s in node.index.list_series()}
    assert decisions[scout.series_instance_uid]["matched_rules"] == []
    assert decisions[scout.series_instance_uid]["unrouted"] is True
    assert decisions[chest.series_instance_uid]["forward_to"] == ["pacs"]


def test_editing_rules_changes_routing_and_an_invalid_edit_keeps_the_old_rules(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    rules = write_rules(
        tmp_path / "rules",
        """
        - name: all-to-a
          match: {Modality: CT}
          forward_to: [a]
        """,
    )
    with StoreSCP(ae_title="A") as a, StoreSCP(ae_title="B") as b:
        node = node_factory(
            destinations={"a": destination("A", a.port), "b": destination("B", b.port)}
        )
        first_version = node.rules.current.version
        send(phantom(tmp_path / "s1", "ONE", seed=1).paths, node.scp.port)
        a.wait_for_files(6, timeout=60)

        rules.write_text(rules.read_text().replace("forward_to: [a]", "forward_to: [b]"))
        poll_until(lambda: node.rules.current.version != first_version, timeout=20, what="a reload")
        send(phantom(tmp_path / "s2", "TWO", seed=2).paths, node.scp.port)
        b.wait_for_files(6, timeout=60)
        second_version = node.rules.current.version

        rules.write_text(rules.read_text().replace("forward_to: [b]", "forward_to: [nowhere]"))
        poll_until(
            lambda: "nowhere" in (node.rules.last_rejection or ""), timeout=20, what="the refusal"
        )
        assert node.rules.current.version == second_version
        send(phantom(tmp_path / "s3", "THREE", seed=3).paths, node.scp.port)
        b.wait_for_files(12, timeout=60)
        assert len(a.files()) == 6
    versions = [v.version for v in node.rules.history()]
    assert versions[:2] == [second_version, first_version]


def test_a_destination_down_at_completion_receives_everything_when_it_comes_up(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rules(tmp_path / "rules", "- {name: fwd, match: {Modality: CT}, forward_to: [late]}\n")
    held = HeldPort()
    node = node_factory(destinations={"late": destination("LATE", held.port)})
    series = phantom(tmp_path / "ct", "LATE", seed=4)
    send(series.paths, node.scp.port)
    # The destination stays down over several attempts ("two minutes", shortened).
    poll_until(
        lambda: any(s.attempts >= 3 for s in sends_in_state(node, "pending")),
        timeout=60,
        what="three failed attempts",
    )
    with StoreSCP(ae_title="LATE", port=held.release()) as late:
        late.wait_for_files(6, timeout=60)
        poll_until(lambda: sends_in_state(node, "done"), timeout=30, what="the send done")
    (send_row,) = sends_in_state(node, "done")
    attempts = node.outbox.queue.attempts(send_row.id)
    assert [a.outcome for a in attempts][-1] == "delivered"
    assert {a.outcome for a in attempts[:-1]} == {"temporary"}


def test_a_destination_down_for_too_long_fails_and_retry_delivers_once_fixed(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rules(tmp_path / "rules", "- {name: fwd, match: {Modality: CT}, forward_to: [gone]}\n")
    held = HeldPort()
    node = node_factory(destinations={"gone": destination("GONE", held.port, max_age_seconds=3)})
    send(phantom(tmp_path / "ct", "GONE", seed=5).paths, node.scp.port)
    poll_until(lambda: sends_in_state(node, "failed"), timeout=60, what="the send to fail")
    (failed,) = sends_in_state(node, "failed")
    assert failed.reason is not None and "gave up after 3 s" in failed.reason
    assert failed.attempts > 1

    config = config_beside(node.config, tmp_path)
    listed = run_dicomnode("jobs", "--state", "failed", "--config", str(config))
    assert f"send-{failed.id}\tsend\tgone" in listed.stdout
    with StoreSCP(ae_title="GONE", port=held.release()) as fixed:
        retried = run_dicomnode("retry", str(failed.id), "--config", str(config))
        assert retried.returncode == 0, retried.stderr
        fixed.wait_for_files(6, timeout=60)
        poll_until(lambda: sends_in_state(node, "done"), timeout=30, what="the send done")
    attempts = node.outbox.queue.attempts(failed.id)
    assert (attempts[-1].outcome, attempts[-1].sent) == ("delivered", 6)
    (entry,) = AuditLog(node.database).entries()
    assert (entry.action, entry.target) == ("job.retry", f"send-{failed.id}")
    assert entry.actor.endswith("(cli)")
    again = run_dicomnode("retry", str(failed.id), "--config", str(config))
    assert again.returncode == 1
    assert "is done, not failed" in again.stderr


def test_a_permanent_rejection_fails_at_once_with_the_reason(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rules(tmp_path / "rules", "- {name: fwd, match: {Modality: CT}, forward_to: [refuser]}\n")
    with StoreSCP(ae_title="NO", extra_args=["--refuse"]) as refusing:
        node = node_factory(destinations={"refuser": destination("NO", refusing.port)})
        send(phantom(tmp_path / "ct", "NO", seed=6).paths, node.scp.port)
        poll_until(lambda: sends_in_state(node, "failed"), timeout=60, what="the send to fail")
    (failed,) = sends_in_state(node, "failed")
    assert failed.attempts == 1
    assert failed.reason is not None
    assert "association rejected (service-user, no-reason-given; permanent)" in failed.reason
