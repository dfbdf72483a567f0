"""A job's failure is its own: a store that fails is retried with backoff, then failed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import StorageError
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.jobs import JOB_ATTEMPTS
from dicomnode.store.completion import utc_now
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")


def test_a_job_whose_results_cannot_be_stored_backs_off_then_fails_and_others_run(
    node_factory: Callable[..., Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        "- {name: ai, match: {Modality: CT}, pipeline: bone}\n"
    )
    node = node_factory(
        models={
            "threshold": {
                "kind": "python",
                "function": "dicomnode.testing.models:slow_threshold",
                "options": {"seconds": 0.0},
            }
        },
        pipelines={"bone": bone_pipeline("threshold")},
    )
    workers = node.workers
    real_store = workers._store
    first_series: list[int] = []

    def failing_store(job: Any, result: Any, started: float) -> None:
        if not first_series:
            first_series.append(job.series_id)
        if job.series_id == first_series[0]:
            raise StorageError("database write failed: OperationalError")
        real_store(job, result, started)

    monkeypatch.setattr(workers, "_store", failing_store)
    _send(tmp_path / "a", 1, node.scp.port)
    poll_until(
        lambda: any(j.failures for j in workers.queue.list_jobs()), timeout=90, what="a failure"
    )
    (job,) = workers.queue.list_jobs()
    assert job.state == "pending" and job.next_attempt_at is not None  # backing off
    assert job.error is not None and "OperationalError" in job.error
    assert workers.queue.next_pending(now=utc_now()) is None  # not due yet

    # Another series' job runs meanwhile.
    _send(tmp_path / "b", 2, node.scp.port)
    poll_until(
        lambda: "done" in [j.state for j in workers.queue.list_jobs()],
        timeout=90,
        what="the other job done",
    )

    # Each later run fails the same way; after JOB_ATTEMPTS runs the job fails for good.
    while (current := workers.queue.get(job.id)) is not None and current.state == "pending":
        assert current.next_attempt_at is not None
        due = current.next_attempt_at + timedelta(seconds=1)
        assert workers.queue.next_pending(now=due) == job.id
        claimed = workers.queue.claim(job.id, due)
        assert claimed is not None
        workers.run_job(claimed)
    final = workers.queue.get(job.id)
    assert final is not None and final.state == "failed"
    assert final.attempts == JOB_ATTEMPTS and final.failures == JOB_ATTEMPTS


def _send(folder: Path, seed: int, port: int) -> None:
    series = write_ct_phantom(folder, CTPhantomSpec(slices=4, rows=32, columns=32, seed=seed))
    files = [f for f in map(inspect_file, series.paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results)
