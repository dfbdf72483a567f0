"""`dicomnode jobs` and `dicomnode retry` name jobs as the API and the web page do
(pipeline-N, send-N), and retry pipeline jobs as well as sends, audited."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dicomnode.admin import AuditLog
from dicomnode.node import Node
from dicomnode.testing.cli import config_beside
from dicomnode.testing.cli import run_dicomnode as cli
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_a_failed_pipeline_job_is_listed_and_retried_from_the_command_line(
    node_factory: Callable[..., Node],
    send_phantom: Callable[..., Any],
    write_rules: Callable[..., Any],
    pipeline_settings: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    write_rules("- {name: bone, match: {Modality: CT}, pipeline: bone}\n")
    node = node_factory(**pipeline_settings("explode"))
    send_phantom(node)
    poll_until(lambda: node.workers.queue.list_jobs("failed"), timeout=60, what="the job to fail")
    (failed,) = node.workers.queue.list_jobs("failed")
    config = config_beside(node.config, tmp_path)

    listed = cli("jobs", "--state", "failed", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()[1:]
    assert line.startswith(f"pipeline-{failed.id}\tpipeline\tbone\t")
    assert "NaN where a tumour should be" in line
    # The series as `dicomnode series` lists it: its UID's end and its description.
    series = node.index.series_by_id(failed.series_id)
    assert series is not None
    assert line.split("\t")[3] == f"…{series.series_uid[-19:]} {series.description}".strip()
    # `series` filters: by modality, state and time.
    found = cli("series", "--modality", "ct", "--state", "complete", "--config", str(config))
    (row,) = [r.split("\t") for r in found.stdout.splitlines() if series.series_uid in r]
    assert row[6] == "bone"  # the routing column names the rules that matched
    for other in (["--modality", "MR"], ["--state", "receiving"], ["--since", "2999-01-01"]):
        listed_other = cli("series", *other, "--config", str(config))
        assert listed_other.returncode == 0 and series.series_uid not in listed_other.stdout
    assert cli("series", "--since", "yesterday", "--config", str(config)).returncode == 2
    as_json = json.loads(cli("jobs", "--json", "--config", str(config)).stdout)
    assert [(job["id"], job["state"]) for job in as_json] == [(f"pipeline-{failed.id}", "failed")]
    assert cli("jobs", "--kind", "send", "--config", str(config)).stdout.count("\n") == 1

    retried = cli("retry", f"pipeline-{failed.id}", "--config", str(config))
    assert retried.returncode == 0, retried.stderr
    assert f"job pipeline-{failed.id}: requeued for bone" in retried.stdout
    node.workers.wake()
    poll_until(
        lambda: (job := node.workers.queue.get(failed.id)) is not None and job.attempts == 2,
        timeout=60,
        what="the second run",
    )
    (entry,) = AuditLog(node.database).entries(action="job.retry")
    assert (entry.target, entry.detail["previous_state"]) == (f"pipeline-{failed.id}", "failed")
    assert entry.actor.endswith("(cli)")


def test_retry_names_what_is_wrong_with_a_job_id(node: Node, tmp_path: Path) -> None:
    config = config_beside(node.config, tmp_path)
    unknown = cli("retry", "pipeline-99", "--config", str(config))
    assert unknown.returncode == 1
    assert "job pipeline-99 does not exist: nothing to retry" in unknown.stderr
    malformed = cli("retry", "job-1", "--config", str(config))
    assert malformed.returncode == 2
    assert "'job-1' is not a job id such as send-7 or pipeline-12" in malformed.stderr
