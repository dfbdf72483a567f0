"""A dry run on a stored series with a done job shows what its findings routing would do
under the edited rules: each entry, whether it fires, and each condition with its value."""

from __future__ import annotations

import textwrap
from typing import Any

from fastapi.testclient import TestClient

from dicomnode.node import Node

CANDIDATE = textwrap.dedent(
    """\
    - name: bone
      match: {Modality: CT}
      pipeline: bone
      send_to: [pacs]
      on_findings:
        - name: any-bone
          when: {Bone.present: true}
          forward_to: [pacs]
        - name: huge-bone
          when:
            Bone.present: true
            Bone.volume_ml: {min: 1000000}
          send_results_to: [pacs]
    """
)


def test_a_dry_run_evaluates_on_findings_on_the_latest_done_job(
    pipeline_run: tuple[Node, TestClient, Any],
) -> None:
    node, client, series = pipeline_run
    response = client.post(
        "/api/rules/dry-run",
        json={"content": CANDIDATE, "series_uid": series.series_instance_uid},
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["decision"]["pipeline_runs"] == [
        {
            "rule": "bone",
            "pipeline": "bone",
            "send_to": ["pacs"],
            "on_findings": ["any-bone", "huge-bone"],
        }
    ]
    routes = {r["entry"]: r for r in run["findings_routes"]}
    assert routes["any-bone"]["fired"] is True
    assert routes["any-bone"]["forward_to"] == ["pacs"]
    assert routes["any-bone"]["checks"] == [
        {"key": "Bone.present", "holds": True, "text": "Bone.present is true: equals true holds"}
    ]
    huge = routes["huge-bone"]
    assert huge["fired"] is False
    assert [c["holds"] for c in huge["checks"]] == [True, False]
    assert huge["checks"][1]["text"].endswith(": min 1000000 fails")
    assert "FIRES  any-bone: forward the series to pacs" in run["explain"]
    assert "no     huge-bone: results to pacs" in run["explain"]
    # A dry run changes nothing: the job's own record is as the worker left it.
    (job,) = node.workers.queue.list_jobs()
    assert "findings_routed" not in job.timeline
