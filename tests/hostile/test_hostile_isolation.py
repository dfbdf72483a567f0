"""One broken unit fails alone: routing, pipelines and sends go on for every other series.

Measured on e23735d: an instance the router could not read (its spool file damaged or
gone after the node acknowledged it) made the router raise on that series every 15 s,
and no later series was routed, forwarded or sent to a pipeline.
"""

from __future__ import annotations

import json
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.outbox.queue import SendSummary
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.phantom.ct import CTPhantomSeries
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.ports import free_port
from dicomnode.testing.process import poll_until

FAST_SENDS = {"initial_seconds": 0.5, "max_seconds": 2.0, "max_age_seconds": 3600}
# Long enough to damage a spool file between the acknowledgement and the completion.
SETTLE = {"settle_seconds": 5.0}
# ScanOptions (0018,0022) CS, Explicit VR Little Endian: tag, then the VR code.
SCAN_OPTIONS_CS = b"\x18\x00\x22\x00CS"


def write_rules(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(textwrap.dedent(text))


def destination(ae: str, port: int) -> dict[str, Any]:
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "retry": FAST_SENDS}


def send(paths: tuple[Path, ...], port: int) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{port}"))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def phantom(folder: Path, description: str, seed: int) -> CTPhantomSeries:
    spec = CTPhantomSpec(
        slices=4, rows=32, columns=32, pixel_spacing_mm=6.0, seed=seed,
        series_description=description, series_number=seed + 1,
    )  # fmt: skip
    return write_ct_phantom(folder, spec)


def undecodable_element(path: Path) -> None:
    """Give ScanOptions the VR code ``ZZ``: pydicom raises when the rule reads it."""
    data = path.read_bytes()
    assert data.count(SCAN_OPTIONS_CS) == 1
    path.write_bytes(data.replace(SCAN_OPTIONS_CS, SCAN_OPTIONS_CS[:4] + b"ZZ"))


def missing_file(path: Path) -> None:
    path.unlink()


def damage_after_acknowledgement(
    node: Node, series: CTPhantomSeries, damage: Callable[[Path], None]
) -> str:
    """Damage one stored instance of a received series before it completes; its file name."""
    stored = node.index.find_series(series.series_instance_uid)
    assert stored is not None
    victim = node.spool.path(node.index.instances_of(stored.id)[1].spool_name)
    damage(victim)
    now = node.index.find_series(series.series_instance_uid)
    # Otherwise the router may have read the file intact: the test would prove nothing.
    assert now is not None and now.state == "receiving", "completed before the damage"
    return victim.name


def http(method: str, url: str) -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:")
    # A change is declared JSON even without a body (the admin API refuses it otherwise).
    headers = {"Content-Type": "application/json"} if method != "GET" else {}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - loopback http only
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - as above
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def routed(node: Node, series: CTPhantomSeries) -> bool:
    found = node.index.find_series(series.series_instance_uid)
    return found is not None and bool(node.router.decisions(found.id))


@pytest.mark.parametrize("damage", [undecodable_element, missing_file])
def test_an_unreadable_instance_fails_its_series_routing_and_later_series_are_routed(
    node_factory: Callable[..., Node], tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    write_rules(
        tmp_path / "rules",
        # ScanOptions is not indexed: the router reads it from the stored files.
        "- {name: fwd, match: {Modality: CT, ScanOptions: HELICAL}, forward_to: [pacs]}\n",
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": destination("PACS", pacs.port)}, completion=SETTLE
        )
        broken = phantom(tmp_path / "broken", "BROKEN", 1)
        send(broken.paths, node.scp.port)
        file_name = damage_after_acknowledgement(node, broken, damage)
        poll_until(
            lambda: bool(node.router.queue.failures()), timeout=60, what="the routing failure"
        )
        (failure,) = node.router.queue.failures()
        assert failure.series_uid == broken.series_instance_uid
        assert failure.state == "retrying"  # bounded retries with backoff, then failed
        assert file_name in failure.error and "cannot read instance file" in failure.error

        # Series that complete after it are routed and forwarded all the same.
        good = [phantom(tmp_path / f"good{n}", f"GOOD {n}", 10 + n) for n in range(3)]
        for series in good:
            send(series.paths, node.scp.port)
        poll_until(
            lambda: all(routed(node, s) for s in good), timeout=90, what="the later series routed"
        )
        poll_until(lambda: len(pacs.files()) == 12, timeout=90, what="12 instances forwarded")
        assert not routed(node, broken)
        forwarded = {str(pydicom.dcmread(p).SeriesInstanceUID) for p in pacs.files()}
        assert forwarded == {s.series_instance_uid for s in good}

        # Operators see it: the API's series, the page's data, and the metrics.
        assert node.admin is not None
        base = f"http://127.0.0.1:{node.admin.port}"
        detail = json.loads(http("GET", f"{base}/api/series/{broken.series_instance_uid}")[1])
        assert detail["series"]["routing_state"] == "retrying"
        assert file_name in detail["series"]["routing_error"]
        (completion,) = detail["completions"]
        assert completion["routing_failures"] == 1 and completion["consumed_at"] is None
        metrics = http("GET", f"{base}/metrics")[1]
        assert "dicomnode_routing_failures_total 1.0" in metrics
        assert 'dicomnode_routing_failing{state="retrying"} 1.0' in metrics


def test_routing_gives_up_after_its_attempts_and_an_operator_retry_routes_it(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    write_rules(
        tmp_path / "rules",
        "- {name: fwd, match: {Modality: CT, ScanOptions: HELICAL}, forward_to: [pacs]}\n",
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={"pacs": destination("PACS", pacs.port)}, completion=SETTLE
        )
        broken = phantom(tmp_path / "broken", "BROKEN", 1)
        send(broken.paths, node.scp.port)
        stored = node.index.find_series(broken.series_instance_uid)
        assert stored is not None
        victim = node.spool.path(node.index.instances_of(stored.id)[1].spool_name)
        intact = victim.read_bytes()
        damage_after_acknowledgement(node, broken, undecodable_element)
        poll_until(lambda: bool(node.router.queue.failures()), timeout=60, what="a failure")

        # Later attempts, as the backoff would make them (the clock moved on each time).
        attempts = node.router.queue.retry_policy.attempts
        for _ in range(attempts - 1):
            (entry,) = node.router.queue.due(node.router.queue.failures()[0].next_attempt_at)
            node.router._route_one(entry)
        (failure,) = node.router.queue.failures()
        assert failure.state == "failed" and failure.failures == attempts
        assert failure.next_attempt_at is None
        assert node.router.queue.due(failure.failed_at) == []  # never again by itself

        # The operator repairs the file and retries (the API, audited): routed and sent.
        victim.write_bytes(intact)
        assert node.admin is not None
        base = f"http://127.0.0.1:{node.admin.port}"
        retry = f"{base}/api/series/{broken.series_instance_uid}/retry-routing"
        status, body = http("POST", retry)
        assert status == 200 and json.loads(body)["requeued"] == 1
        poll_until(lambda: routed(node, broken), timeout=60, what="the retried routing")
        poll_until(lambda: len(pacs.files()) == 4, timeout=60, what="the series forwarded")
        assert http("POST", retry)[0] == 409


def test_a_routing_a_pipeline_and_a_send_failure_leave_ten_other_series_delivered(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    """The acceptance test of issue 11: three broken units, ten others served in full."""
    write_rules(
        tmp_path / "rules",
        """
        - name: fwd
          match:
            Modality: CT
            ScanOptions: HELICAL
            SeriesDescription: {regex: "^(GOOD|ROUTE|PIPE)"}
          forward_to: [pacs]
        - {name: ai, match: {SeriesDescription: {regex: "^GOOD"}}, pipeline: bone, send_to: [pacs]}
        - name: bad-ai
          match: {SeriesDescription: PIPE-FAIL}
          pipeline: exploding
          send_to: [pacs]
        - {name: refused, match: {SeriesDescription: SEND-FAIL}, forward_to: [nobody]}
        """,
    )
    with StoreSCP(ae_title="PACS") as pacs:
        node = node_factory(
            destinations={
                "pacs": destination("PACS", pacs.port),
                # Nothing listens there: every association is refused.
                "nobody": destination("NOBODY", free_port()),
            },
            models={
                "threshold": {
                    "kind": "python",
                    "function": "dicomnode.testing.models:slow_threshold",
                    "options": {"seconds": 0.0, "threshold": 300.0},
                },
                "explode": {"kind": "python", "function": "dicomnode.testing.models:explode"},
            },
            pipelines={"bone": bone_pipeline("threshold"), "exploding": bone_pipeline("explode")},
            completion=SETTLE,
        )
        route_fail = phantom(tmp_path / "route", "ROUTE-FAIL", 1)
        send(route_fail.paths, node.scp.port)
        damage_after_acknowledgement(node, route_fail, missing_file)
        pipe_fail = phantom(tmp_path / "pipe", "PIPE-FAIL", 2)
        send_fail = phantom(tmp_path / "send", "SEND-FAIL", 3)
        good = [phantom(tmp_path / f"good{n}", f"GOOD {n}", 10 + n) for n in range(10)]
        started = time.monotonic()
        for series in (pipe_fail, send_fail, *good):
            send(series.paths, node.scp.port)
        sent_at = time.monotonic()

        # Each good series: its 4 images forwarded, and its SEG and SR delivered.
        def delivered() -> dict[str, list[str]]:
            by_series: dict[str, list[str]] = {}
            for path in pacs.files():
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                except (OSError, EOFError, ValueError, AttributeError):
                    continue  # still being written by storescp
                key = str(
                    ds.ReferencedSeriesSequence[0].SeriesInstanceUID
                    if ds.Modality == "SEG"
                    else ds.SeriesInstanceUID
                )
                by_series.setdefault(key, []).append(str(ds.Modality))
            return by_series

        good_uids = {s.series_instance_uid for s in good}

        def all_good_delivered() -> bool:
            got = delivered()
            return all(sorted(got.get(uid, [])) == ["CT"] * 4 + ["SEG"] for uid in good_uids)

        poll_until(all_good_delivered, timeout=300, what="ten series forwarded and segmented")
        poll_until(
            lambda: [j.state for j in node.workers.queue.list_jobs()].count("done") == 10,
            timeout=120,
            what="ten jobs done (SR included)",
        )
        seconds = time.monotonic() - sent_at
        print(f"ten series delivered {seconds:.1f} s after the last was sent")

        # The three broken units failed alone, each with its reason.
        (routing,) = node.router.queue.failures()
        assert routing.series_uid == route_fail.series_instance_uid
        assert "cannot read instance file" in routing.error
        jobs = {j.pipeline: j for j in node.workers.queue.list_jobs()}
        assert jobs["exploding"].state == "failed"
        assert jobs["exploding"].error is not None and "NaN" in jobs["exploding"].error

        def refused_sends() -> list[SendSummary]:
            return [s for s in node.outbox.queue.list_sends() if s.destination == "nobody"]

        # Its retries go on: read it between two attempts, not while one is under way.
        poll_until(
            lambda: any(s.state != "sending" for s in refused_sends()),
            timeout=30,
            what="the failing send between attempts",
        )
        refused = refused_sends()
        assert len(refused) == 1 and refused[0].state in ("pending", "failed")
        assert refused[0].attempts >= 1 and refused[0].reason
        # The pipeline failure did not stop its series' forwarding; the routing one did.
        got = delivered()
        assert sorted(got[pipe_fail.series_instance_uid]) == ["CT"] * 4
        assert route_fail.series_instance_uid not in got
        assert send_fail.series_instance_uid not in got
        assert started < sent_at
