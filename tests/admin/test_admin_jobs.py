"""/api/jobs: both kinds of job, their timelines, and audited retries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dicomnode.node import Node
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import HeldPort
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

# Stages every segmentation run has (the engine may time more, e.g. measuring, between them).
# A retry has no body, but is declared JSON like every change (else 415).
JSON = {"Content-Type": "application/json"}
CORE_STAGES = ["load", "preprocess", "inference", "seg", "sr", "store"]


def stages_recorded(node: Node) -> list[tuple[str, float]]:
    """The stages the worker stored for the node's one pipeline job, with their seconds."""
    (job,) = node.workers.queue.list_jobs()
    stages = [(stage["stage"], stage["seconds"]) for stage in job.timeline["stages"]]
    assert [name for name, _ in stages if name in CORE_STAGES] == CORE_STAGES
    return stages


def stages_shown(timeline: dict[str, Any]) -> list[tuple[str, float]]:
    return [(stage["stage"], stage["seconds"]) for stage in timeline["stages"]]


def test_a_pipeline_jobs_timeline_lists_every_stage_and_each_send_attempt(
    pipeline_run: tuple[Node, TestClient, Any],
) -> None:
    node, client, series = pipeline_run
    (job,) = client.get("/api/jobs", params={"kind": "pipeline"}).json()
    assert job["state"] == "done"
    assert job["series_uid"] == series.series_instance_uid
    assert job["pipeline"] == "bone"
    assert job["rule"] == "bone"

    detail = client.get(f"/api/jobs/{job['id']}").json()
    assert detail["job"] == job
    timeline = detail["timeline"]
    assert timeline["series_uid"] == series.series_instance_uid
    received, completed, routed = timeline["received"], timeline["completed"], timeline["routed"]
    assert received["instance_count"] == 8
    assert received["first_at"] <= received["last_at"] <= completed["at"] <= routed["at"]
    assert routed["matched_rules"] == ["bone"]
    assert routed["at"] <= timeline["queued_at"] <= timeline["started_at"]
    assert timeline["started_at"] <= timeline["finished_at"]
    assert stages_shown(timeline) == stages_recorded(node)  # every stage, with its duration
    assert all(stage["seconds"] >= 0 for stage in timeline["stages"])
    assert timeline["seconds"] >= sum(s["seconds"] for s in timeline["stages"]) * 0.99
    assert sorted(r["modality"] for r in timeline["results"]) == ["SEG", "SR"]
    assert len(timeline["sends"]) == 2
    for send in timeline["sends"]:
        assert send["destination"] == "pacs"
        assert send["state"] == "done"
        (attempt,) = send["attempts"]
        assert attempt["outcome"] == "delivered"
        assert attempt["status"] == 0
        assert attempt["status_hex"] == "0x0000"
        assert attempt["status_name"] == "success"
        assert attempt["started_at"] <= attempt["ended_at"]


def test_a_result_sends_timeline_starts_at_the_source_series(
    pipeline_run: tuple[Node, TestClient, Any],
) -> None:
    node, client, series = pipeline_run
    sends = client.get("/api/jobs", params={"kind": "send", "state": "done"}).json()
    assert len(sends) == 2
    assert all(s["origin"].startswith("job:") for s in sends)
    assert {s["series_uid"] for s in sends}.isdisjoint({series.series_instance_uid})
    timeline = client.get(f"/api/jobs/{sends[0]['id']}").json()["timeline"]
    assert timeline["series_uid"] == series.series_instance_uid
    assert stages_shown(timeline) == stages_recorded(node)
    (send,) = timeline["sends"]
    assert send["id"] == sends[0]["id"]
    assert timeline["queued_at"] == sends[0]["created_at"]
    assert timeline["finished_at"] == sends[0]["finished_at"]
    assert timeline["started_at"] == send["attempts"][0]["started_at"]


def test_jobs_are_listed_newest_first_and_filtered_by_kind_and_state(
    pipeline_run: tuple[Node, TestClient, Any],
) -> None:
    _node, client, _series = pipeline_run
    everything = client.get("/api/jobs").json()
    assert sorted(job["kind"] for job in everything) == ["pipeline", "send", "send"]
    created = [job["created_at"] for job in everything]
    assert created == sorted(created, reverse=True)
    assert len(client.get("/api/jobs", params={"state": "done"}).json()) == 3
    assert client.get("/api/jobs", params={"state": "failed"}).json() == []
    assert client.get("/api/jobs", params={"state": "sending"}).json() == []
    assert len(client.get("/api/jobs", params={"limit": 2}).json()) == 2
    for params in ({"kind": "print"}, {"state": "lost"}, {"limit": 0}):
        assert client.get("/api/jobs", params=params).status_code == 422, params


@pytest.mark.parametrize("job_id", ["pipeline-999", "send-999", "send-999999999999999999"])
def test_an_unknown_job_is_404(
    node: Node, client_for: Callable[..., TestClient], job_id: str
) -> None:
    client = client_for(node)
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    assert client.post(f"/api/jobs/{job_id}/retry", headers=JSON).status_code == 404


@pytest.mark.parametrize("job_id", ["12", "job-1", "send-0", "send-01", "send-1x", "send--1"])
def test_a_malformed_job_id_is_422(
    node: Node, client_for: Callable[..., TestClient], job_id: str
) -> None:
    client = client_for(node)
    assert client.get(f"/api/jobs/{job_id}").status_code == 422
    assert client.post(f"/api/jobs/{job_id}/retry", headers=JSON).status_code == 422


def test_a_failed_send_is_retried_by_the_api_audited_and_delivered(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
) -> None:
    write_rules("- {name: fwd, match: {Modality: CT}, forward_to: [gone]}\n")
    held = HeldPort()
    node = node_factory(
        destinations={"gone": make_destination("GONE", held.port, max_age_seconds=2)}
    )
    client = client_for(node)
    send_phantom(node)
    poll_until(
        lambda: client.get("/api/jobs", params={"state": "failed"}).json(),
        timeout=60,
        what="the send to fail",
    )
    (failed,) = client.get("/api/jobs", params={"state": "failed"}).json()
    assert failed["kind"] == "send"
    assert "gave up after 2 s" in failed["reason"]
    attempts = client.get(f"/api/jobs/{failed['id']}").json()["timeline"]["sends"][0]["attempts"]
    assert len(attempts) == failed["attempts"] >= 2
    assert {a["outcome"] for a in attempts} == {"temporary"}
    assert all(a["status"] is None for a in attempts)  # never associated: no DIMSE status

    with StoreSCP(ae_title="GONE", port=held.release()) as fixed:
        response = client.post(
            f"/api/jobs/{failed['id']}/retry", headers={**JSON, "X-Actor": "alice"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["state"] in {"pending", "sending", "done"}
        fixed.wait_for_files(6, timeout=60)
        poll_until(
            lambda: client.get(f"/api/jobs/{failed['id']}").json()["job"]["state"] == "done",
            timeout=30,
            what="the retried send done",
        )
    again = client.post(f"/api/jobs/{failed['id']}/retry", headers=JSON)
    assert again.status_code == 409
    assert "is done, not failed" in again.json()["detail"]

    (entry,) = client.get("/api/audit").json()
    assert entry["actor"] == "alice"
    assert entry["action"] == "job.retry"
    assert entry["target"] == failed["id"]
    assert entry["detail"]["previous_state"] == "failed"
    assert "gave up" in entry["detail"]["previous_reason"]
    outcomes = [
        a["outcome"]
        for a in client.get(f"/api/jobs/{failed['id']}").json()["timeline"]["sends"][0]["attempts"]
    ]
    assert outcomes[-1] == "delivered"


def test_a_failed_pipeline_job_is_retried_and_runs_again(
    node_factory: Callable[..., Node],
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    pipeline_settings: Callable[..., dict[str, Any]],
) -> None:
    write_rules("- {name: bone, match: {Modality: CT}, pipeline: bone}\n")
    node = node_factory(**pipeline_settings("explode"))
    client = client_for(node)
    send_phantom(node)
    poll_until(
        lambda: client.get("/api/jobs", params={"state": "failed"}).json(),
        timeout=60,
        what="the job to fail",
    )
    (failed,) = client.get("/api/jobs", params={"state": "failed"}).json()
    assert failed["kind"] == "pipeline"
    assert "NaN where a tumour should be" in failed["error"]
    timeline = client.get(f"/api/jobs/{failed['id']}").json()["timeline"]
    # The stages that ran, and the one it failed in with its time until it failed.
    assert [(s["stage"], s["failed"]) for s in timeline["stages"]] == [
        ("load", False),
        ("preprocess", False),
        ("inference", True),
    ]
    assert timeline["sends"] == []

    response = client.post(f"/api/jobs/{failed['id']}/retry", headers=JSON)
    assert response.status_code == 200, response.text
    poll_until(
        lambda: client.get(f"/api/jobs/{failed['id']}").json()["job"]["attempts"] == 2,
        timeout=60,
        what="the second run",
    )
    poll_until(
        lambda: client.get(f"/api/jobs/{failed['id']}").json()["job"]["state"] == "failed",
        timeout=60,
        what="the second failure",
    )
    (entry,) = client.get("/api/audit", params={"action": "job.retry"}).json()
    assert entry["actor"] == "api"
    assert entry["target"] == failed["id"]
