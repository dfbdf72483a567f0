"""``/api/shadow``: the report over the API, and ending shadow mode on an evaluation
report: refused (409, nothing written) for another model, done and audited for the model
the pipeline runs now, and only with an admin token."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from dicomnode.admin import AdminAccess, AdminServices, create_app
from dicomnode.admin.tokens import single
from dicomnode.node import Node
from dicomnode.testing.models import bone_pipeline

MODEL = {"kind": "python", "function": "dicomnode.testing.models:slow_threshold"}
RULES = """\
- name: bone-candidate
  match: {Modality: CT}
  pipeline: bone-next
  shadow: true
"""


def _report(node: Node, **changes: Any) -> dict[str, Any]:
    provenance = node.engine.provenance("bone-next", None)
    return {
        "kind": "dicomnode-evaluation",
        "version": 1,
        "created": "2025-01-01T00:00:00Z",
        "pipeline": "bone-next",
        "model": "bone",
        "model_sha256": provenance.model_sha256,
        "pipeline_sha256": provenance.pipeline_sha256,
        "dataset": {"manifest": "m.csv", "manifest_sha256": "1" * 64, "items": 12},
        "classification": {"sensitivity": 0.9, "specificity": 0.8},
        "segmentation": None,
        "subgroups": {},
        "items": [],
        **changes,
    }


def test_ending_shadow_mode_over_the_api_is_checked_and_audited(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    write_rules: Callable[..., Path],
    tmp_path: Path,
) -> None:
    path = write_rules(RULES, "shadow.yaml")
    node = node_factory(models={"bone": MODEL}, pipelines={"bone-next": bone_pipeline("bone")})
    client = client_for(node, provenance=lambda name: node.engine.provenance(name, None))

    listed = client.get("/api/shadow").json()
    assert listed["rows"] == [] and listed["live_agreement"]["compared"] == 0

    other = client.post(
        "/api/shadow/bone-candidate/end",
        json={"report_content": _report(node, model_sha256="f" * 64)},
    )
    assert other.status_code == 409
    assert "the report validated another model" in other.json()["detail"]
    wrong = client.post(
        "/api/shadow/bone-candidate/end", json={"report_content": _report(node, pipeline="bone")}
    )
    assert wrong.status_code == 409
    assert path.read_text() == RULES
    assert client.get("/api/audit", params={"action": "shadow.end"}).json() == []

    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(node)))
    ended = client.post(
        "/api/shadow/bone-candidate/end",
        json={"report": str(report)},
        headers={"X-Actor": "dr-evaluator"},
    )
    assert ended.status_code == 200, ended.text
    assert path.read_text() == RULES.replace("shadow: true", "shadow: false")
    (entry,) = client.get("/api/audit", params={"action": "shadow.end"}).json()
    assert (entry["actor"], entry["target"]) == ("dr-evaluator", "bone-candidate")
    assert entry["detail"]["report_sha256"] == ended.json()["report_sha256"]
    assert entry["detail"]["metrics"] == {
        "items": 12,
        "classification.sensitivity": 0.9,
        "classification.specificity": 0.8,
    }
    assert not next(r for r in node.rules.current if r.name == "bone-candidate").shadow
    again = client.post("/api/shadow/bone-candidate/end", json={"report": str(report)})
    assert again.status_code == 409 and "not in shadow mode" in again.json()["detail"]


def test_a_viewer_may_read_and_compare_but_not_end_shadow_mode(
    node_factory: Callable[..., Node],
    services_for: Callable[..., AdminServices],
    write_rules: Callable[..., Path],
) -> None:
    path = write_rules(RULES, "shadow.yaml")
    node = node_factory(models={"bone": MODEL}, pipelines={"bone-next": bone_pipeline("bone")})
    services = services_for(node, provenance=lambda name: node.engine.provenance(name, None))
    app = create_app(services, AdminAccess(tokens=single("viewer-token", role="viewer")))
    headers = {"Authorization": "Bearer viewer-token"}
    with TestClient(app, base_url="http://localhost", headers=headers) as client:
        assert client.get("/api/shadow").status_code == 200
        compared = client.post(
            "/api/shadow/compare", json={"labels": "SeriesInstanceUID,label\n1.2.3,1\n"}
        )
        assert compared.status_code == 200, compared.text
        assert compared.json()["confusion"]["labelled"] == 0
        unreadable = client.post("/api/shadow/compare", json={"labels": "uid,label\n1,1\n"})
        assert unreadable.status_code == 422
        assert "no identifying column" in unreadable.json()["detail"]
        refused = client.post(
            "/api/shadow/bone-candidate/end", json={"report_content": _report(node)}
        )
        assert refused.status_code == 403
    assert path.read_text() == RULES
