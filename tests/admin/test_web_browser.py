"""The administrators' web page in a real browser: Debian's Chromium, headless, driven
by Playwright, against a real node process with real DICOM peers.

One walk through what an administrator does: sign in with the token, read the
dashboard, edit a rule with a mistake and see the error inline, fix it, try it on a
stored series, save it, and retry a send that failed while its destination was down.

With ``DICOMNODE_SCREENSHOTS=DIR`` in the environment the test also saves the
screenshots used in docs/admin-guide.md.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescp import StoreSCP
from dicomnode.testing.storescu import storescu

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)

TOKEN = secrets.token_urlsafe(24)
RULES = """\
# Every CT goes to the archive.
- name: ct-to-archive
  match:
    Modality: CT
  forward_to: [archive]
"""
WITH_MISTAKE = """\
# Every CT goes to the archive.
- name: ct-to-archive
  match:
    Modality: CT
    SliceThicknes: {min: 1}
  forward_to: [archive]
"""
FIXED = """\
# Every CT goes to the archive; thin slices only.
- name: ct-to-archive
  match:
    Modality: CT
    SliceThickness: {min: 1}
  forward_to: [archive]
"""
SLICES = 6


@pytest.fixture
def screenshots() -> Path | None:
    folder = os.environ.get("DICOMNODE_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox"],  # CI runs as root, where Chromium's sandbox cannot start
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeProcess, int, int]]:
    """A node whose one destination is down: its send fails fast and waits for a retry."""
    archive_port = free_port()
    admin_port = free_port()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    process = NodeProcess(
        tmp_path,
        {
            "admin": {"port": admin_port, "token": TOKEN},
            "completion": {"settle_seconds": 0.5, "quiet_seconds": 2},
            "destinations": {
                "archive": {
                    "ae_title": "ARCHIVE",
                    "host": LOOPBACK,
                    "port": archive_port,
                    "retry": {"initial_seconds": 0.2, "max_seconds": 0.5, "max_age_seconds": 1},
                }
            },
        },
    )
    with process:
        wait_for_port(admin_port, timeout=30)  # start() waits for the DICOM port only
        yield process, admin_port, archive_port


def fetch(url: str, token: str | None = None) -> tuple[int, dict[str, str], str]:
    """GET ``url``: status, headers (lower-case names) and body text."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http on loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            head = {k.lower(): v for k, v in response.headers.items()}
            return response.status, head, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def api(admin_port: int, path: str) -> Any:
    status, _, body = fetch(f"http://{LOOPBACK}:{admin_port}/api/{path}", TOKEN)
    assert status == 200, (path, status, body)
    return json.loads(body)


def failed_send(admin_port: int) -> dict[str, Any] | None:
    failed = api(admin_port, "jobs?kind=send&state=failed")
    return failed[0] if failed else None


def test_an_administrator_edits_rules_and_retries_a_failed_send(
    node: tuple[NodeProcess, int, int],
    browser: Any,
    tmp_path: Path,
    screenshots: Path | None,
) -> None:
    process, admin_port, archive_port = node
    series = write_ct_phantom(
        tmp_path / "ct",
        CTPhantomSpec(slices=SLICES, rows=32, columns=32, seed=3, series_description="Web CT"),
    )
    sent = storescu([tmp_path / "ct"], ae_title=NODE_AE, port=process.port)
    assert sent.returncode == 0, sent.stdout
    poll_until(
        lambda: failed_send(admin_port) is not None,
        timeout=60,
        what="the send to the archive, which is down, to fail",
    )
    send = failed_send(admin_port)
    assert send is not None and send["destination"] == "archive"

    page = browser.new_page(viewport={"width": 1360, "height": 900})
    script_errors: list[str] = []  # uncaught exceptions in the page's script
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"http://{LOOPBACK}:{admin_port}/")

    # The token is asked for once; the name goes into the audit log.
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    page.fill("#actor", "Dr Admin")
    page.press("#actor", "Tab")

    # The dashboard: the node, the failed send needing attention, the series that arrived.
    status = page.locator("#node-status")
    sync_api.expect(status).to_contain_text(NODE_AE)
    sync_api.expect(status).to_contain_text("ready")
    sync_api.expect(status).to_contain_text(str(process.port))
    attention = page.locator("#attention")
    sync_api.expect(attention.locator(f'tr[data-job="{send["id"]}"]')).to_contain_text("failed")
    sync_api.expect(page.locator("#recent-series")).to_contain_text("Web CT")
    sync_api.expect(page.locator('#destinations tr[data-destination="archive"]')).to_contain_text(
        f"ARCHIVE@{LOOPBACK}:{archive_port}"
    )
    if screenshots:
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

    # The rules editor: a misspelt keyword is shown inline, with its line, and blocks saving.
    page.click("a[data-nav=rules]")
    editor = page.locator("#rule-text")
    sync_api.expect(editor).to_have_value(RULES)
    sync_api.expect(page.locator("#check-status")).to_contain_text("Valid")
    editor.fill(WITH_MISTAKE)
    problems = page.locator("#problems li")
    sync_api.expect(problems).to_have_count(1)
    sync_api.expect(problems.first).to_contain_text("rules.yaml:5")
    sync_api.expect(problems.first).to_contain_text("SliceThicknes")
    sync_api.expect(page.locator(".gutter div.problem")).to_have_text("5")
    sync_api.expect(page.locator("#save")).to_be_disabled()
    if screenshots:
        page.screenshot(path=str(screenshots / "rules-error.png"), full_page=True)

    # Fixed: valid again; a dry run on the stored series says the rule matches.
    editor.fill(FIXED)
    sync_api.expect(page.locator("#check-status")).to_contain_text("Valid")
    sync_api.expect(problems).to_have_count(0)
    page.select_option("#dry-run-series", series.series_instance_uid)
    page.click("#dry-run")
    verdict = page.locator('#dry-run-result tr[data-rule="ct-to-archive"]')
    sync_api.expect(verdict).to_contain_text("matched")
    sync_api.expect(page.locator("#dry-run-decision")).to_contain_text("forward to archive")
    if screenshots:
        page.screenshot(path=str(screenshots / "rules-dry-run.png"), full_page=True)

    # Saved: on disk, in force, and in the audit log under the name given.
    sync_api.expect(page.locator("#save")).to_be_enabled()
    page.click("#save")
    sync_api.expect(page.locator("#notice")).to_contain_text("Saved rules.yaml")
    assert (tmp_path / "rules" / "rules.yaml").read_text() == FIXED
    saved = api(admin_port, "audit?action=rules.save")
    assert [(entry["actor"], entry["target"]) for entry in saved] == [
        ("web: Dr Admin", "rules.yaml")
    ]
    assert yaml.safe_load(saved[0]["detail"]["content"]) == yaml.safe_load(FIXED)

    # The destination comes back; Retry on the job page delivers the series.
    with StoreSCP(ae_title="ARCHIVE", port=archive_port) as archive:
        page.goto(f"http://{LOOPBACK}:{admin_port}/ui/#/jobs/{send['id']}")
        sync_api.expect(page.locator("#job-state")).to_contain_text("failed")
        sync_api.expect(page.locator("#timeline tr[data-event=routed]")).to_contain_text(
            "ct-to-archive"
        )
        page.click(f'button.retry[data-job="{send["id"]}"]')
        sync_api.expect(page.locator("#notice")).to_contain_text(f"{send['id']} requeued")
        archive.wait_for_files(SLICES, timeout=30)
        poll_until(
            lambda: api(admin_port, f"jobs/{send['id']}")["job"]["state"] == "done",
            timeout=30,
            what="the retried send to be done",
        )
        page.reload()
        sync_api.expect(page.locator("#job-state")).to_contain_text("done")
        attempts = page.locator(f'#sends [data-send="{send["id"]}"] tr[data-attempt]')
        sync_api.expect(attempts.last).to_contain_text("delivered")
        sync_api.expect(attempts.last).to_contain_text("0x0000")
        if screenshots:
            page.screenshot(path=str(screenshots / "job-timeline.png"), full_page=True)

    retries = api(admin_port, "audit?action=job.retry")
    assert [(entry["actor"], entry["target"]) for entry in retries] == [
        ("web: Dr Admin", send["id"])
    ]
    assert script_errors == []


def test_the_page_is_served_offline_with_a_strict_content_security_policy(
    node: tuple[NodeProcess, int, int],
) -> None:
    """Everything the page loads comes from the node itself, and no data is served without
    the token."""
    _, admin_port, _ = node
    base = f"http://{LOOPBACK}:{admin_port}"
    status, headers, html = fetch(f"{base}/")  # redirected to /ui/
    assert status == 200
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "http:" not in html and "https:" not in html  # no CDN, no external link
    for asset in ("app.js", "app.css", "icon.svg"):
        status, _, text = fetch(f"{base}/ui/assets/{asset}")
        assert status == 200, asset
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert "http:" not in text and "https:" not in text, asset
    assert fetch(f"{base}/api/overview")[0] == 401


def test_a_pipeline_jobs_page_shows_its_stages_results_and_sends(
    pipeline_run: tuple[Any, Any, Any], browser: Any, screenshots: Path | None
) -> None:
    """After an end-to-end run: the job page lists every stage with its duration, the SEG
    and SR it wrote, and their delivered sends; the series page links to the job."""
    node, client, series = pipeline_run
    (job,) = client.get("/api/jobs?kind=pipeline").json()
    stages = [s["stage"] for s in client.get(f"/api/jobs/{job['id']}").json()["timeline"]["stages"]]
    assert stages  # what the page must show, as the API reports it

    page = browser.new_page(viewport={"width": 1360, "height": 900})
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    base = f"http://{LOOPBACK}:{node.admin.port}/ui/"  # no token: an open API on loopback

    page.goto(f"{base}#/series/{series.series_instance_uid}")
    sync_api.expect(page.locator("#series-jobs")).to_contain_text("bone (rule bone)")
    page.click(f'#series-jobs a[href="#/jobs/{job["id"]}"]')

    sync_api.expect(page.locator("#job-state")).to_contain_text("done")
    rows = page.locator("#stages tr[data-stage]")
    sync_api.expect(rows).to_have_count(len(stages))
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.stage)") == stages
    for row in rows.all():
        assert float(row.locator("td.num").inner_text()) >= 0
    sync_api.expect(page.locator("#timeline tr[data-event=routed]")).to_contain_text("bone")
    sends = page.locator("#sends [data-send]")
    sync_api.expect(sends).to_have_count(2)  # the SEG and the SR, each delivered
    for send in sends.all():
        sync_api.expect(send.locator("tr[data-attempt]").last).to_contain_text("0x0000")
    if screenshots:
        page.screenshot(path=str(screenshots / "pipeline-job.png"), full_page=True)
    # The Shadow page: this live job is none of its rows, and pasted labels are compared.
    page.click("a[data-nav=shadow]")
    sync_api.expect(page.locator("#shadow-report")).to_contain_text("No shadow jobs yet")
    page.fill("#shadow-labels", f"SeriesInstanceUID,label\n{series.series_instance_uid},1\n")
    with page.expect_response(lambda r: r.url.endswith("/api/shadow/compare")) as compared:
        page.get_by_role("button", name="Compare with these labels").click()
    assert compared.value.status == 200
    sync_api.expect(page.locator("#shadow-report")).to_contain_text("No shadow jobs yet")
    assert script_errors == []
