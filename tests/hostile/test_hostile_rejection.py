"""Hostile and broken IOCM rejection notes: read to what is well formed, never trusted further.

A note is read only where its title is a rejection title in the DCM scheme on a Key
Object Selection; its references need valid UIDs, are bounded in number, and reject an
instance only where the note names that instance's own series. Whatever a note holds, it
is never routed to a pipeline and routing goes on for every other series.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.routing import rejection_note
from dicomnode.routing.rejection_note import read_note
from dicomnode.testing.key_objects import (
    REJECTED_FOR_QUALITY,
    Referenced,
    references_of,
    write_key_object,
)
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
# A pipeline on a python model: no TensorFlow to load for a test of routing.
BONE_PIPELINE: dict[str, Any] = {
    "models": {
        "bone-model": {"kind": "python", "function": "dicomnode.testing.models:slow_threshold"}
    },
    "pipelines": {"bone": bone_pipeline("bone-model")},
}


def note_dataset(tmp_path: Path, references: list[Referenced], **title: Any) -> pydicom.Dataset:
    code = (title.get("value", "113001"), title.get("scheme", "DCM"), "Rejected")
    path = write_key_object(tmp_path / "note.dcm", references, code)
    return pydicom.dcmread(path)


def ref(series: str = "1.2.3", sop: str = "1.2.3.4", study: str = "1.2") -> Referenced:
    return Referenced(study, series, CT_IMAGE, sop)


def title(ds: pydicom.Dataset) -> pydicom.Dataset:
    item: pydicom.Dataset = ds.ConceptNameCodeSequence[0]
    return item


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda ds: setattr(title(ds), "CodingSchemeDesignator", "99X"), "scheme"),
        (lambda ds: setattr(title(ds), "CodeValue", "113000"), "of interest"),
        (lambda ds: setattr(ds, "ConceptNameCodeSequence", []), "no title"),
        (lambda ds: delattr(ds, "ConceptNameCodeSequence"), "title missing"),
        (lambda ds: setattr(ds, "SOPClassUID", BASIC_TEXT_SR), "not a key object"),
    ],
)  # fmt: skip
def test_only_a_dcm_rejection_title_on_a_key_object_makes_a_note(
    tmp_path: Path, change: Callable[[pydicom.Dataset], Any], why: str
) -> None:
    dataset = note_dataset(tmp_path, [ref()])
    assert read_note(dataset) is not None
    change(dataset)
    assert read_note(dataset) is None, why


def test_malformed_references_are_left_out_and_counted(tmp_path: Path) -> None:
    good = ref(sop="1.2.3.4.5")
    bad = [
        ref(sop="1.2.3.x"),  # not digits
        ref(sop="1.02.3"),  # a leading zero
        ref(sop="1." + "2" * 70),  # over 64 characters
        ref(series=""),  # no series UID
        ref(study="1..2"),  # an empty component
    ]
    note = read_note(note_dataset(tmp_path, [good, *bad, good]))
    assert note is not None
    assert [r.sop_instance_uid for r in note.references] == [good.sop_instance_uid]
    assert note.malformed == len(bad)


def test_a_note_without_evidence_rejects_nothing(tmp_path: Path) -> None:
    dataset = note_dataset(tmp_path, [ref()])
    del dataset.CurrentRequestedProcedureEvidenceSequence
    note = read_note(dataset)
    assert note is not None and note.references == () and note.malformed == 0


def test_a_note_naming_too_many_instances_is_read_up_to_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rejection_note, "MAX_REFERENCES", 10)
    note = read_note(note_dataset(tmp_path, [ref(sop=f"1.2.3.{n}") for n in range(1, 26)]))
    assert note is not None and len(note.references) == 10 and note.truncated


def send(paths: Any, node: Node) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@{LOOPBACK}:{node.scp.port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def decision(node: Node, series_uid: str) -> dict[str, Any]:
    def decided() -> list[dict[str, Any]]:
        series = node.index.find_series(series_uid)
        return node.router.decisions(series.id) if series is not None else []

    poll_until(decided, timeout=60, what=f"series {series_uid} routed")
    return decided()[0]


def test_a_spoofed_or_garbage_note_rejects_nothing_and_routing_goes_on(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        textwrap.dedent(
            """
            - name: everything
              match: {}
              pipeline: bone
            """
        )
    )
    node = node_factory(**BONE_PIPELINE)
    node.workers.stop()  # jobs stay pending: a cancellation would show
    spec = CTPhantomSpec(slices=4, rows=32, columns=32, seed=1)
    ct = write_ct_phantom(tmp_path / "ct", spec)
    send(ct.paths, node)
    decision(node, ct.series_instance_uid)
    # The CT's own SOP Instance UIDs, each under another series' UID; and garbage.
    spoofed = [
        Referenced(r.study_uid, "1.2.3.999", r.sop_class_uid, r.sop_instance_uid)
        for r in references_of(list(ct.paths))
    ]
    garbage = [ref(sop="not.a.uid"), ref(series="1.2.3\\4.5")]
    note = write_key_object(tmp_path / "note.dcm", [*spoofed, *garbage], REJECTED_FOR_QUALITY)
    send([note], node)
    routed = decision(node, str(pydicom.dcmread(note).SeriesInstanceUID))
    later = write_ct_phantom(
        tmp_path / "later", CTPhantomSpec(slices=4, rows=32, columns=32, seed=2)
    )
    send(later.paths, node)
    assert decision(node, later.series_instance_uid)["pipeline_runs"]

    assert routed["pipeline_runs"] == []  # a note, however broken, never reaches a pipeline
    assert routed["rejection_note"]["references"] == len(spoofed)
    states = sorted(job.state for job in node.workers.queue.list_jobs())
    assert states == ["pending", "pending"]  # the CT's job kept, the later one queued
    series = node.index.find_series(ct.series_instance_uid)
    assert series is not None and series.rejected_count == 0

    # The spoofed note did not take the instances' place: the right note still rejects.
    right = write_key_object(tmp_path / "right.dcm", references_of(list(ct.paths)))
    send([right], node)
    decision(node, str(pydicom.dcmread(right).SeriesInstanceUID))
    series = node.index.find_series(ct.series_instance_uid)
    assert series is not None and series.rejected_count == 4
    jobs = {job.series_id: job.state for job in node.workers.queue.list_jobs()}
    assert jobs[series.id] == "cancelled"
