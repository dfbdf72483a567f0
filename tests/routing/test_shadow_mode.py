"""Shadow mode end to end: a shadow rule runs its pipeline on a received series, keeps the
results and sends nothing, while a live rule on the same series sends; the shadow report
compares the two and the labels; ``shadow end`` flips the rule on a report of the model
it runs, audited, and refuses a report of another model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from dicomnode.admin.audit import AuditLog
from dicomnode.cli import main
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.rules import RulesError, parse_rules
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

MODEL = {
    "kind": "python",
    "function": "dicomnode.testing.models:slow_threshold",
    "options": {"seconds": 0.0, "threshold": 300.0},
}
RULES = """\
# The model in use, and the next one tried beside it.
- name: bone-live
  match: {Modality: CT}
  pipeline: bone
  send_to: [pacs]
- name: bone-candidate
  match: {Modality: CT}
  pipeline: bone-next
  send_to: [pacs]   # where its results would go
  shadow: true      # tried in shadow until evaluated
"""
# 96 columns at 0.8 mm reach the phantom's bone (700 HU): both pipelines find it.
SERIES = CTPhantomSpec(slices=4, rows=96, columns=96, seed=1, series_number=1)


def _send(paths: Any, port: int | None) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def _settled(node: Node) -> bool:
    jobs = node.workers.queue.list_jobs()
    sends = node.outbox.queue.list_sends()
    return (
        len(jobs) == 2
        and all(j.state == "done" for j in jobs)
        and all(s.state == "done" for s in sends)
    )


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rules_check_refuses_forward_to_and_stop_on_a_shadow_rule() -> None:
    text = """\
- name: tried
  match: {Modality: CT}
  pipeline: bone
  send_to: [pacs]
  forward_to: [research]
  stop: true
  shadow: true
"""
    with pytest.raises(RulesError) as raised:
        parse_rules(
            [(Path("rules/shadow.yaml"), text)],
            destinations=("pacs", "research"),
            pipelines=("bone",),
        )
    problems = [str(p) for p in raised.value.problems]
    assert any(
        p.startswith("rules/shadow.yaml:5: tried.forward_to: a shadow rule sends nothing")
        for p in problems
    ), problems
    assert any(
        p.startswith("rules/shadow.yaml:6: tried.stop: a shadow rule may not") for p in problems
    )
    # Without them, the rule is valid, and its send_to is kept as where results would go.
    valid = "\n".join(
        line for line in text.splitlines() if "forward_to" not in line and "stop" not in line
    )
    (rule,) = parse_rules([(Path("ok.yaml"), valid)], destinations=("pacs",), pipelines=("bone",))
    assert rule.shadow and rule.send_to == ("pacs",)


def test_a_shadow_rule_keeps_its_results_sends_nothing_and_ends_on_an_evaluation(
    node_factory: Callable[..., Node], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bone.yaml").write_text(RULES)
    pipelines = {"bone": bone_pipeline("bone"), "bone-next": bone_pipeline("bone")}
    with StoreSCP(ae_title="PACS") as pacs, capture_logs() as events:
        destinations = {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}}
        node = node_factory(destinations=destinations, models={"bone": MODEL}, pipelines=pipelines)
        series = write_ct_phantom(tmp_path / "ct", SERIES)
        _send(series.paths, node.scp.port)
        pacs.wait_for_files(2, timeout=60)  # the live job's SEG and SR
        poll_until(lambda: _settled(node), timeout=60, what="both jobs and the live sends")
        received = len(pacs.files())

    # The live rule sent its results (the control); the shadow job queued no send at all.
    jobs = {job.rule: job for job in node.workers.queue.list_jobs()}
    live, shadow = jobs["bone-live"], jobs["bone-candidate"]
    assert not live.shadow and shadow.shadow
    sends = node.outbox.queue.list_sends()
    assert sends and {s.origin for s in sends} == {f"job:{live.id}"}
    assert received == 2
    # Its results are kept in the index, and its timeline says where they would have gone.
    assert shadow.timeline["shadow"] is True
    assert shadow.timeline["would_send_to"] == ["pacs"]
    assert sorted(r["modality"] for r in shadow.timeline["results"]) == ["SEG", "SR"]
    for result in shadow.timeline["results"]:
        assert node.index.find_series(result["series_uid"]) is not None
    done = [e for e in events if e["event"] == "job_done"]
    assert {(e["job_id"], e["shadow"]) for e in done} == {(live.id, False), (shadow.id, True)}

    # The report: the shadow result beside the live model's, and the labels so far.
    config = tmp_path / "cli.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(node.config.storage.path)},
                "database": {"url": node.config.database_url},
                "rules_dir": str(rules),
                "destinations": destinations,
                "models": {"bone": MODEL},
                "pipelines": pipelines,
            }
        )
    )
    labels = tmp_path / "labels.csv"
    labels.write_text(f"SeriesInstanceUID,label\n{series.series_instance_uid},1\n9.9.9,0\n")
    code, out, err = _cli(
        capsys, "shadow", "report", "--config", str(config), "--labels", str(labels), "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    (row,) = report["rows"]
    assert (row["series_uid"], row["pipeline"], row["rule"]) == (
        series.series_instance_uid,
        "bone-next",
        "bone-candidate",
    )
    assert row["findings"][0]["name"] == "Bone" and row["findings"][0]["present"] is True
    assert row["live"]["pipeline"] == "bone" and row["live"]["job_id"] == live.id
    assert row["live"]["findings"] == [{"name": "Bone", "agree": True, "volume_difference_ml": 0.0}]
    assert row["label"] is True and row["predicted"] is True
    confusion = report["confusion"]
    assert (confusion["true_positive"], confusion["false_positive"]) == (1, 0)
    assert confusion["sensitivity"] == 1.0 and confusion["ppv"] == 1.0
    assert confusion["specificity"] is None  # no negative among the series seen
    code, text, err = _cli(capsys, "shadow", "report", "--config", str(config))
    assert code == 0, err
    assert "Bone agree (+0.0 ml)" in text and "would send to pacs" in text

    # Ending it: a report of another model is refused and changes nothing ...
    model_sha = node.engine.provenance("bone-next", None).model_sha256
    evaluation = {
        "kind": "dicomnode-evaluation",
        "version": 1,
        "created": "2025-01-01T00:00:00Z",
        "pipeline": "bone-next",
        "model": "bone",
        "model_sha256": "0" * 64,
        "pipeline_sha256": node.engine.provenance("bone-next", None).pipeline_sha256,
        "dataset": {"manifest": "manifest.csv", "manifest_sha256": "1" * 64, "items": 40},
        "classification": None,
        "segmentation": {"mean_dice": 0.91},
        "subgroups": {},
        "items": [],
    }
    other = tmp_path / "other-report.json"
    other.write_text(json.dumps(evaluation))
    code, _out, err = _cli(
        capsys, "shadow", "end", "bone-candidate", "--report", str(other), "--config", str(config)
    )
    assert code == 2
    assert "the report validated another model" in err
    assert (rules / "bone.yaml").read_text() == RULES
    audit = AuditLog(node.database)
    assert audit.entries(action="shadow.end") == []

    # ... one of the model the pipeline runs now flips the rule, audited with its hash.
    matching = tmp_path / "report.json"
    matching.write_bytes(json.dumps({**evaluation, "model_sha256": model_sha}).encode())
    code, out, err = _cli(
        capsys,
        "shadow",
        "end",
        "bone-candidate",
        "--report",
        str(matching),
        "--config",
        str(config),
    )
    assert code == 0, err
    assert (rules / "bone.yaml").read_text() == RULES.replace("shadow: true", "shadow: false")
    (entry,) = audit.entries(action="shadow.end")
    assert entry.target == "bone-candidate"
    assert entry.detail["report_sha256"] == hashlib.sha256(matching.read_bytes()).hexdigest()
    assert entry.detail["model_sha256"] == model_sha
    assert entry.detail["rule_file"] == "bone.yaml"
    assert entry.detail["pipeline"] == "bone-next"
    assert entry.detail["metrics"] == {"items": 40, "segmentation.mean_dice": 0.91}
    # The running node picks the rule change up by its hot reload.
    poll_until(
        lambda: any(r.name == "bone-candidate" and not r.shadow for r in node.rules.current),
        timeout=30,
        what="the live rules without shadow",
    )
