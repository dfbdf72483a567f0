"""Routing on findings, end to end: a series whose job finds bone sends its results and
its images to a second destination; one without bone sends its results to send_to only.
``rules explain --series`` shows why, from the done jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from structlog.testing import capture_logs

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

MODEL = {
    "kind": "python",
    "function": "dicomnode.testing.models:slow_threshold",
    "options": {"seconds": 0.0, "threshold": 300.0},
}
RULES = """\
- name: bone
  match: {Modality: CT}
  pipeline: bone
  send_to: [pacs]
  on_findings:
    - name: bone-to-board
      when:
        Bone.present: true
        Bone.max: {min: 500}
      send_results_to: [board]
      forward_to: [board]
"""
# 96 columns at 0.8 mm reach the phantom's bone (700 HU); 32 do not (the job finds none).
WITH_BONE = CTPhantomSpec(slices=4, rows=96, columns=96, seed=1, series_number=1)
WITHOUT_BONE = CTPhantomSpec(slices=4, rows=32, columns=32, seed=2, series_number=2)


def _send(paths: Any, port: int | None) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def _done(node: Node, jobs: int) -> bool:
    states = [j.state for j in node.workers.queue.list_jobs()]
    sends = node.outbox.queue.list_sends()
    return states == ["done"] * jobs and all(s.state == "done" for s in sends)


def test_a_finding_routes_results_and_source_and_its_absence_does_not(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    with (
        StoreSCP(ae_title="PACS") as pacs,
        StoreSCP(ae_title="BOARD") as board,
        capture_logs() as events,
    ):
        destinations = {
            "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
            "board": {"ae_title": "BOARD", "host": "127.0.0.1", "port": board.port},
        }
        node = node_factory(
            destinations=destinations,
            models={"bone": MODEL},
            pipelines={"bone": bone_pipeline("bone")},
        )
        with_bone = write_ct_phantom(tmp_path / "a", WITH_BONE)
        _send(with_bone.paths, node.scp.port)
        pacs.wait_for_files(2, timeout=60)  # SEG and SR
        board.wait_for_files(6, timeout=60)  # SEG, SR and the 4 CT images
        poll_until(lambda: _done(node, 1), timeout=60, what="the first job and its sends")

        without = write_ct_phantom(tmp_path / "b", WITHOUT_BONE)
        _send(without.paths, node.scp.port)
        pacs.wait_for_files(3, timeout=60)  # no bone: an SR alone
        poll_until(lambda: _done(node, 2), timeout=60, what="the second job and its sends")
        at_board = [pydicom.dcmread(path, stop_before_pixels=True) for path in board.files()]
        at_pacs = [pydicom.dcmread(path, stop_before_pixels=True) for path in pacs.files()]

    assert sorted(str(ds.Modality) for ds in at_board) == ["CT"] * 4 + ["SEG", "SR"]
    assert {str(ds.StudyInstanceUID) for ds in at_board} == {with_bone.study_instance_uid}
    assert {str(ds.SOPInstanceUID) for ds in at_board if ds.Modality == "CT"} == {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in with_bone.paths
    }
    assert sorted(str(ds.Modality) for ds in at_pacs) == ["SEG", "SR", "SR"]

    second, first = node.workers.queue.list_jobs()  # newest first
    assert first.timeline["findings_routed"] == [
        {"entry": "bone-to-board", "results_to": ["board"], "forwarded_to": ["board"]}
    ]
    assert second.timeline["findings_routed"] == []
    board_sends = [s for s in node.outbox.queue.list_sends() if s.destination == "board"]
    assert sorted(s.origin for s in board_sends) == [f"job:{first.id}"] * 3

    routed = [e for e in events if e["event"] == "findings_routed"]
    assert routed == [
        {
            "event": "findings_routed",
            "log_level": "info",
            "job_id": first.id,
            "rule": "bone",
            "entry": "bone-to-board",
            "results_to": ["board"],
            "forwarded_to": ["board"],
        }
    ]

    config = tmp_path / "explain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(node.config.storage.path)},
                "database": {"url": node.config.database_url},
                "rules_dir": str(tmp_path / "rules"),
                "destinations": destinations,
                "models": {"bone": MODEL},
                "pipelines": {"bone": bone_pipeline("bone")},
            }
        )
    )
    fired = run_dicomnode(
        "rules", "explain", "--series", with_bone.series_instance_uid, "--config", str(config)
    )
    assert fired.returncode == 0, fired.stderr
    assert "on findings of the latest done bone job (values in HU):" in fired.stdout
    assert "FIRES  bone-to-board: results to board; forward the series to board" in fired.stdout
    assert "holds  Bone.max is 700: min 500 holds [" in fired.stdout
    assert "on findings: bone-to-board (rule bone)" in fired.stdout
    quiet = run_dicomnode(
        "rules", "explain", "--series", without.series_instance_uid, "--config", str(config)
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "no     bone-to-board" in quiet.stdout
    assert "FAILS  Bone.present is false: equals true fails (absent)" in quiet.stdout
    assert "FAILS  Bone is absent (no max): min 500 fails" in quiet.stdout
    assert "on findings: bone-to-board" not in quiet.stdout
