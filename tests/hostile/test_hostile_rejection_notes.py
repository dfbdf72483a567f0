"""IHE IOCM rejection notes with a running node and real peers.

A Key Object Selection titled 113001/113037/113038/113039 is never routed by the rules;
the instances it names are rejected (their pending pipeline job cancelled, their series
showing it), and the note follows them to every destination that received them. Before
this, such a note was routed like an image series (to a CT pipeline, measured on main).
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSeries, CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import config_beside, run_dicomnode
from dicomnode.testing.dcmtk import StoreSCP, storescu
from dicomnode.testing.key_objects import (
    KEY_OBJECT_SELECTION,
    OF_INTEREST,
    REJECTED_FOR_QUALITY,
    REJECTED_FOR_SAFETY,
    references_of,
    write_key_object,
)
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import poll_until

FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}

# Every series of the study, notes included, matches both rules: exactly what sent the
# rejection note to the CT pipeline before.
EVERYTHING_TO_PIPELINE_AND_PACS = """
- name: everything
  match: {}
  pipeline: bone
  forward_to: [pacs]
"""


def write_rules(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(textwrap.dedent(text))


def pipeline_settings() -> dict[str, Any]:
    """A ``bone`` pipeline on a python model (no TensorFlow needed)."""
    return {
        "models": {
            "bone-model": {
                "kind": "python",
                "function": "dicomnode.testing.models:slow_threshold",
                "options": {"seconds": 0.0, "threshold": 300.0},
            }
        },
        "pipelines": {"bone": bone_pipeline("bone-model")},
    }


def start_node(
    node_factory: Callable[..., Node], tmp_path: Path, pacs: StoreSCP, rules: str
) -> Node:
    write_rules(tmp_path / "rules", rules)
    return node_factory(
        destinations={
            "pacs": {"ae_title": pacs.ae_title, "host": LOOPBACK, "port": pacs.port}
            | {"retry": FAST_RETRY}
        },
        **pipeline_settings(),
    )


def phantom(folder: Path, seed: int = 1, study_uid: str | None = None) -> CTPhantomSeries:
    spec = CTPhantomSpec(slices=6, rows=32, columns=32, seed=seed, series_number=seed)
    return write_ct_phantom(folder, spec, study_instance_uid=study_uid)


def send(paths: Any, node: Node) -> None:
    """C-STORE with pynetdicom (dicomnode's own SCU)."""
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@{LOOPBACK}:{node.scp.port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def send_with_storescu(paths: list[Path], node: Node) -> None:
    """C-STORE with DCMTK's storescu."""
    result = storescu(paths, ae_title="DICOMNODE", port=node.scp.port)
    assert result.returncode == 0, result.stdout


def decision(node: Node, series_uid: str) -> dict[str, Any]:
    """Wait for the series' (first) routing decision and return it."""

    def decided() -> list[dict[str, Any]]:
        series = node.index.find_series(series_uid)
        return node.router.decisions(series.id) if series is not None else []

    poll_until(decided, timeout=60, what=f"series {series_uid} routed")
    return decided()[0]


def series_id(node: Node, series_uid: str) -> int:
    series = node.index.find_series(series_uid)
    assert series is not None
    return series.id


def sop_classes(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in paths]


def api_series(node: Node) -> dict[str, dict[str, Any]]:
    """``GET /api/series`` on the node's own admin server (open on loopback)."""
    assert node.admin is not None
    url = f"http://{LOOPBACK}:{node.admin.port}/api/series"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return {row["series_uid"]: row for row in json.load(answer)}


def test_a_note_after_its_series_cancels_the_pending_job_and_follows_it_to_the_pacs(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    ct = phantom(tmp_path / "ct")
    note = write_key_object(tmp_path / "note.dcm", references_of(list(ct.paths)))
    with StoreSCP(ae_title="PACS") as pacs:
        node = start_node(node_factory, tmp_path, pacs, EVERYTHING_TO_PIPELINE_AND_PACS)
        # No worker takes jobs: the CT's job stays pending, as behind a busy pipeline.
        node.workers.stop()
        send(ct.paths, node)
        assert decision(node, ct.series_instance_uid)["pipeline_runs"]
        (job,) = node.workers.queue.list_jobs()
        assert job.state == "pending"
        pacs.wait_for_files(6, timeout=60)

        send_with_storescu([note], node)
        note_uid = str(pydicom.dcmread(note).SeriesInstanceUID)
        routed = decision(node, note_uid)
        received = pacs.wait_for_files(7, timeout=60)
        assert sop_classes(received)[6] == KEY_OBJECT_SELECTION  # after the instances

    # The note went to no pipeline and to the PACS only as the instances' follower.
    assert routed["pipeline_runs"] == [] and routed["forward_to"] == []
    assert routed["unrouted"] is False
    assert routed["rejection_note"]["forward_to"] == ["pacs"]
    assert routed["rejection_note"]["reasons"] == ["113001 Rejected for Quality Reasons"]
    (cancelled,) = node.workers.queue.list_jobs()  # none for the note
    assert (cancelled.id, cancelled.state) == (job.id, "cancelled")
    assert cancelled.error is not None and "113001" in cancelled.error
    sends = node.outbox.queue.list_sends()
    assert sorted((s.series_id, s.origin) for s in sends) == sorted(
        [
            (series_id(node, ct.series_instance_uid), "rule:everything"),
            (series_id(node, note_uid), "rejection-note"),
        ]
    )
    # The series shows it: the index, the admin API and `dicomnode series`.
    ct_series = node.index.find_series(ct.series_instance_uid)
    assert ct_series is not None and ct_series.rejected_count == 6
    listed = api_series(node)
    assert listed[ct.series_instance_uid]["rejected_count"] == 6
    assert listed[note_uid]["rejected_count"] == 0
    config = config_beside(node.config, tmp_path)
    cli = run_dicomnode("series", "--json", "--config", str(config))
    assert cli.returncode == 0, cli.stderr
    by_uid = {row["series_uid"]: row for row in json.loads(cli.stdout)}
    assert by_uid[ct.series_instance_uid]["rejected_count"] == 6


def test_a_note_before_its_whole_series_keeps_it_from_the_pipeline_and_the_pacs(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    ct = phantom(tmp_path / "ct")
    note = write_key_object(
        tmp_path / "note.dcm", references_of(list(ct.paths)), REJECTED_FOR_SAFETY
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = start_node(node_factory, tmp_path, pacs, EVERYTHING_TO_PIPELINE_AND_PACS)
        send([note], node)
        routed = decision(node, str(pydicom.dcmread(note).SeriesInstanceUID))
        assert routed["rejection_note"]["forward_to"] == []  # nothing received yet

        send(ct.paths, node)
        withheld = decision(node, ct.series_instance_uid)
        # Jobs and sends are written with the decision: none now means none ever.
        assert node.workers.queue.list_jobs() == []
        assert node.outbox.queue.list_sends() == []
        assert pacs.files() == []
    assert withheld["matched_rules"] == ["everything"]
    assert withheld["pipeline_runs"] == [] and withheld["forward_to"] == []
    assert withheld["rejected"]["instances"] == 6
    assert withheld["rejected"]["forwards_withheld"] is True
    assert withheld["rejected"]["reasons"] == ["113037 Rejected for Patient Safety Reasons"]
    ct_series = node.index.find_series(ct.series_instance_uid)
    assert ct_series is not None and ct_series.rejected_count == 6


def test_a_note_before_part_of_a_series_withholds_its_pipeline_and_follows_its_forward(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    ct = phantom(tmp_path / "ct")
    note = write_key_object(tmp_path / "note.dcm", references_of(list(ct.paths[:2])))
    with StoreSCP(ae_title="PACS") as pacs:
        node = start_node(node_factory, tmp_path, pacs, EVERYTHING_TO_PIPELINE_AND_PACS)
        send_with_storescu([note], node)
        decision(node, str(pydicom.dcmread(note).SeriesInstanceUID))
        send(ct.paths, node)
        withheld = decision(node, ct.series_instance_uid)
        received = pacs.wait_for_files(7, timeout=60)
        # The instances first, then the note that rejects two of them.
        assert sop_classes(received)[6] == KEY_OBJECT_SELECTION
        assert KEY_OBJECT_SELECTION not in sop_classes(received[:6])
    assert withheld["forward_to"] == ["pacs"] and withheld["pipeline_runs"] == []
    assert withheld["rejected"]["instances"] == 2
    assert withheld["rejected"]["forwards_withheld"] is False
    assert node.workers.queue.list_jobs() == []


def test_a_key_object_of_interest_is_routed_as_before(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    ct = phantom(tmp_path / "ct")
    selection = write_key_object(tmp_path / "ko.dcm", references_of(list(ct.paths)), OF_INTEREST)
    rules = """
    - name: ko-to-pacs
      match: {Modality: KO}
      forward_to: [pacs]
    """
    with StoreSCP(ae_title="PACS") as pacs:
        node = start_node(node_factory, tmp_path, pacs, rules)
        send(ct.paths, node)
        decision(node, ct.series_instance_uid)
        send_with_storescu([selection], node)
        routed = decision(node, str(pydicom.dcmread(selection).SeriesInstanceUID))
        (received,) = pacs.wait_for_files(1, timeout=60)
        assert sop_classes([received]) == [KEY_OBJECT_SELECTION]
    assert routed["matched_rules"] == ["ko-to-pacs"] and routed["forward_to"] == ["pacs"]
    assert routed.get("rejection_note") is None
    ct_series = node.index.find_series(ct.series_instance_uid)
    assert ct_series is not None and ct_series.rejected_count == 0


def test_a_note_naming_two_series_cancels_one_job_and_keeps_the_other_from_running(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    """One note, one slice of a routed series and all of a series still to come."""
    first = phantom(tmp_path / "a", seed=1)
    second = phantom(tmp_path / "b", seed=2, study_uid=first.study_instance_uid)
    note = write_key_object(
        tmp_path / "note.dcm",
        references_of([*first.paths[:1], *second.paths]),
        REJECTED_FOR_QUALITY,
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = start_node(node_factory, tmp_path, pacs, EVERYTHING_TO_PIPELINE_AND_PACS)
        node.workers.stop()
        send(first.paths, node)
        decision(node, first.series_instance_uid)
        send_with_storescu([note], node)
        decision(node, str(pydicom.dcmread(note).SeriesInstanceUID))
        send(second.paths, node)
        decision(node, second.series_instance_uid)
    jobs = {job.series_id: job for job in node.workers.queue.list_jobs()}
    # The first series' job would load its rejected slice: cancelled; the second
    # series, wholly rejected before it arrived, never had one.
    assert set(jobs) == {series_id(node, first.series_instance_uid)}
    assert jobs[series_id(node, first.series_instance_uid)].state == "cancelled"
    counts = {
        uid: node.index.find_series(uid).rejected_count  # type: ignore[union-attr]
        for uid in (first.series_instance_uid, second.series_instance_uid)
    }
    assert counts == {first.series_instance_uid: 1, second.series_instance_uid: 6}
