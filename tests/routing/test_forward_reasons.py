"""The outbox's reasons, end to end: what each failing destination did, as operators see it.

Every send's reason is what ``dicomnode jobs``, ``/api/jobs`` and the web page show, so
these tests read it where an operator would: the queue, the CLI and the API.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SegmentationStorage,
)

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.outbox import worker
from dicomnode.outbox.queue import SendSummary
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import config_beside, run_dicomnode
from dicomnode.testing.ports import HeldPort, refusing_port
from dicomnode.testing.process import poll_until
from dicomnode.testing.rawpeer import ABORT_BY_USER, RawPeer
from dicomnode.testing.result_files import write_result_files
from dicomnode.testing.storescp import StoreSCP

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}
RESULT_CLASSES = [SegmentationStorage, Comprehensive3DSRStorage]


def destination(ae: str, port: int) -> dict[str, Any]:
    return {
        "ae_title": ae,
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout_seconds": 2.0,
        "network_timeout_seconds": 1.0,
        "retry": FAST_RETRY,
    }


def write_rule(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(text)


def send(paths: list[Path], node: Node) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def sends_to(node: Node, name: str) -> list[SendSummary]:
    return [s for s in node.outbox.queue.list_sends() if s.destination == name]


def api_jobs(node: Node, state: str) -> list[dict[str, Any]]:
    assert node.admin is not None
    url = f"http://127.0.0.1:{node.admin.port}/api/jobs?state={state}"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: list[dict[str, Any]] = json.load(response)
    return data


def test_results_reach_an_implicit_only_peer_and_a_refused_class_fails_at_once(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    files = write_result_files(tmp_path / "made")
    write_rule(
        tmp_path,
        "- {name: results, match: {Modality: [SEG, SR]}, forward_to: [implicit, ctonly]}\n",
    )
    with (
        StoreSCP(
            ae_title="IMPLICIT",
            sop_classes=[CTImageStorage, *RESULT_CLASSES],
            transfer_syntaxes=[ImplicitVRLittleEndian],
        ) as implicit,
        StoreSCP(
            ae_title="CTONLY",
            sop_classes=[CTImageStorage],
            transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        ) as ctonly,
    ):
        node = node_factory(
            destinations={
                "implicit": destination("IMPLICIT", implicit.port),
                "ctonly": destination("CTONLY", ctonly.port),
            }
        )
        send([files.seg, files.sr], node)
        received = implicit.wait_for_files(2, timeout=60)
        syntaxes = {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in received}
        assert syntaxes == {ImplicitVRLittleEndian}
        poll_until(
            lambda: [s.state for s in sends_to(node, "ctonly")] == ["failed", "failed"],
            timeout=60,
            what="both sends to the CT-only peer to fail",
        )
        poll_until(
            lambda: [s.state for s in sends_to(node, "implicit")] == ["done", "done"],
            timeout=30,
            what="both sends to the implicit-only peer to be done",
        )
    failed = sends_to(node, "ctonly")
    assert [s.attempts for s in failed] == [1, 1]  # permanent: never retried
    reasons = sorted(s.reason or "" for s in failed)
    for reason, name, uid in zip(
        reasons,
        ["Comprehensive 3D SR Storage", "Segmentation Storage"],
        [Comprehensive3DSRStorage, SegmentationStorage],
        strict=True,
    ):
        assert reason.startswith("1 instance(s) refused by the destination: ")
        assert f"no presentation context accepted for {name} ({uid})" in reason
        assert "offered Explicit VR Little Endian, Implicit VR Little Endian" in reason

    config = config_beside(node.config, tmp_path)
    listed = run_dicomnode("jobs", "--state", "failed", "--config", str(config))
    assert listed.stdout.count("no presentation context accepted for") == 2, listed.stdout
    shown = sorted(job["reason"] for job in api_jobs(node, "failed"))
    assert shown == reasons


def test_each_way_a_destination_fails_is_named_and_retried(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rule(
        tmp_path,
        "- {name: all, match: {Modality: CT}, forward_to: [closed, silent, aborts, midstore]}\n",
    )
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    with (
        RawPeer(None) as silent,
        RawPeer(ABORT_BY_USER) as aborts,
        StoreSCP(ae_title="MID", extra_args=["--abort-after"]) as midstore,
    ):
        node = node_factory(
            destinations={
                "closed": destination("CLOSED", refusing_port()),
                "silent": destination("SILENT", silent.port),
                "aborts": destination("ABORTS", aborts.port),
                "midstore": destination("MID", midstore.port),
            }
        )
        send(list(series.paths), node)
        expected = {
            "closed": "CLOSED@127.0.0.1:",
            "silent": "timed out: no answer to the association request within 1 s",
            "aborts": "aborted by peer (service-user)",
            "midstore": "aborted by peer (service-user)",
        }

        def all_tried() -> bool:
            return all(
                any(s.attempts >= 1 and s.reason for s in sends_to(node, name)) for name in expected
            )

        poll_until(all_tried, timeout=60, what="an attempt to each destination")
        # Read while the peers still misbehave: later attempts would meet closed ports.
        seen = {name: sends_to(node, name) for name in expected}
        shown = {job["destination"]: job["reason"] for job in api_jobs(node, "pending")}
    for name, words in expected.items():
        (send_row,) = seen[name]
        assert send_row.state in {"pending", "sending"}, (name, send_row.reason)  # retried
        assert send_row.reason is not None and words in send_row.reason, (name, send_row.reason)
        assert name not in shown or words in shown[name]
    assert len(shown) >= 2  # the API shows the same reasons (some may be mid-attempt)
    closed_reason = seen["closed"][0].reason
    assert closed_reason is not None and closed_reason.endswith(": connection refused")


def test_a_missing_spool_file_fails_its_instance_and_delays_nothing_else(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rule(tmp_path, "- {name: fwd, match: {Modality: CT}, forward_to: [late]}\n")
    held = HeldPort()
    node = node_factory(destinations={"late": destination("LATE", held.port)})
    first = write_ct_phantom(tmp_path / "a", CTPhantomSpec(slices=3, rows=16, columns=16, seed=1))
    send(list(first.paths), node)
    # The destination is down until the send has waited once; meanwhile a file goes.
    poll_until(
        lambda: any(s.attempts >= 1 for s in sends_to(node, "late")),
        timeout=60,
        what="a first attempt",
    )
    stored = sorted(node.spool.objects.rglob("*.dcm")) or sorted(
        p for p in node.spool.objects.rglob("*") if p.is_file()
    )
    assert len(stored) == 3, stored
    stored[0].unlink()
    second = write_ct_phantom(tmp_path / "b", CTPhantomSpec(slices=3, rows=16, columns=16, seed=2))
    send(list(second.paths), node)
    poll_until(lambda: len(sends_to(node, "late")) == 2, timeout=60, what="the second send")
    with StoreSCP(ae_title="LATE", port=held.release()) as late:
        late.wait_for_files(5, timeout=60)
        poll_until(
            lambda: sorted(s.state for s in sends_to(node, "late")) == ["done", "failed"],
            timeout=60,
            what="one send done, one failed",
        )
    by_state = {s.state: s for s in sends_to(node, "late")}
    assert by_state["done"].sent_count == 3
    broken = by_state["failed"]
    assert broken.sent_count == 2
    assert broken.reason is not None
    assert "1 instance(s) refused by the destination: cannot read the stored file" in broken.reason
    assert "FileNotFoundError" in broken.reason


def test_a_send_that_raises_is_retried_on_its_own_and_others_go_on(
    node_factory: Callable[..., Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_rule(tmp_path, "- {name: fwd, match: {Modality: CT}, forward_to: [pacs]}\n")
    first = write_ct_phantom(tmp_path / "a", CTPhantomSpec(slices=2, rows=16, columns=16, seed=1))
    second = write_ct_phantom(tmp_path / "b", CTPhantomSpec(slices=2, rows=16, columns=16, seed=2))
    poisoned = {str(pydicom.dcmread(p).SOPInstanceUID) for p in first.paths}
    healed = threading.Event()
    real_send_files = worker.send_files

    def send_files_raising_for_one_series(files: list[SendableFile], *args: Any) -> Any:
        if not healed.is_set() and poisoned & {f.sop_instance_uid for f in files}:
            raise RuntimeError("a bug met in one send")
        return real_send_files(files, *args)

    monkeypatch.setattr(worker, "send_files", send_files_raising_for_one_series)
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(destinations={"pacs": destination("PACS", pacs.port)})
        send(list(first.paths), node)
        send(list(second.paths), node)
        pacs.wait_for_files(2, timeout=60)
        poll_until(
            lambda: any(s.attempts >= 2 for s in sends_to(node, "pacs") if s.state != "done"),
            timeout=60,
            what="the raising send to be tried again",
        )
        (raising,) = [s for s in sends_to(node, "pacs") if s.state != "done"]
        assert raising.reason == "RuntimeError: a bug met in one send"
        healed.set()
        pacs.wait_for_files(4, timeout=60)
        poll_until(
            lambda: [s.state for s in sends_to(node, "pacs")] == ["done", "done"],
            timeout=60,
            what="both sends done",
        )
