"""Results forwarded over DICOM-TLS, and a destination whose certificate does not verify.

A certificate from the wrong CA will not verify on the next try either: the send fails
at once, permanently, with the reason where operators read reasons (``dicomnode jobs``,
``/api/jobs``, the ``send_failed`` event). Once the trust file is fixed, ``dicomnode
retry`` delivers it: the destination's context is rebuilt when its files change.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from structlog.testing import capture_logs

from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.outbox.queue import SendSummary
from dicomnode.testing.cli import config_beside, run_dicomnode
from dicomnode.testing.pki import TestCA
from dicomnode.testing.process import poll_until
from dicomnode.testing.result_files import write_result_files
from dicomnode.testing.storescp import StoreSCP

FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}


def destination(ae: str, port: int) -> dict[str, Any]:
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "retry": FAST_RETRY}


def send_to_node(paths: list[Path], node: Node) -> None:
    assert node.scp.port is not None
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    results = send_files(files, DicomAddress("DICOMNODE", "127.0.0.1", node.scp.port))
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]


def sends_to(node: Node, name: str) -> list[SendSummary]:
    return [s for s in node.outbox.queue.list_sends() if s.destination == name]


def api_failed_reasons(node: Node) -> list[str]:
    assert node.admin is not None
    url = f"http://127.0.0.1:{node.admin.port}/api/jobs?state=failed"
    with urllib.request.urlopen(url, timeout=10) as response:
        return [job["reason"] for job in json.load(response)]


def test_results_go_over_tls_and_an_unverified_destination_fails_until_fixed(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    other = TestCA(tmp_path / "other", name="another CA")
    server = ca.issue("pacs", stem="server")
    client = ca.issue("dicomnode", stem="client")
    # The second destination trusts the wrong CA, as after a botched renewal.
    trust = tmp_path / "trust.pem"
    shutil.copyfile(other.certificate, trust)

    def tls_destination(ae: str, port: int, ca_certificates: Path) -> dict[str, Any]:
        return {
            **destination(ae, port),
            "tls": {
                "ca_certificates": str(ca_certificates),
                "certificate": str(client.certificate),
                "private_key": str(client.private_key),
            },
        }

    files = write_result_files(tmp_path / "made")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        "- {name: results, match: {Modality: [SEG, SR]}, forward_to: [pacs, botched]}\n"
    )
    tls_args = ["+tls", str(server.private_key), str(server.certificate)]
    tls_args += ["+cf", str(ca.certificate), "--require-peer-cert"]
    with (
        StoreSCP(ae_title="PACS", extra_args=tls_args) as pacs,
        StoreSCP(ae_title="BOTCHED", extra_args=tls_args) as botched,
        capture_logs() as events,
    ):
        node = node_factory(
            destinations={
                "pacs": tls_destination("PACS", pacs.port, ca.certificate),
                "botched": tls_destination("BOTCHED", botched.port, trust),
            }
        )
        send_to_node([files.seg, files.sr], node)
        received = pacs.wait_for_files(2, timeout=60)
        classes = sorted(str(pydicom.dcmread(p).SOPClassUID) for p in received)
        assert classes == sorted([SegmentationStorage, Comprehensive3DSRStorage])
        poll_until(
            lambda: [s.state for s in sends_to(node, "botched")] == ["failed", "failed"],
            timeout=60,
            what="both sends to the botched destination to fail",
        )
        failed = sends_to(node, "botched")
        assert [s.attempts for s in failed] == [1, 1]  # permanent: not retried every few s
        reason = (
            f"BOTCHED@127.0.0.1:{botched.port}: TLS: certificate verify failed: "
            "self-signed certificate in certificate chain (destinations.botched.tls)"
        )
        assert [s.reason for s in failed] == [reason, reason]
        assert botched.files() == []
        assert api_failed_reasons(node) == [reason, reason]
        config = config_beside(node.config, tmp_path)
        listed = run_dicomnode("jobs", "--state", "failed", "--config", str(config))
        assert listed.stdout.count("TLS: certificate verify failed") == 2, listed.stdout
        logged = [e for e in events if e["event"] == "send_failed"]
        assert [e["reason"] for e in logged] == [reason, reason]

        # The administrator puts the right CA in place; the next association uses it.
        shutil.copyfile(ca.certificate, trust)
        for send_row in failed:
            retried = run_dicomnode("retry", f"send-{send_row.id}", "--config", str(config))
            assert retried.returncode == 0, retried.stderr
        node.outbox.wake()
        botched.wait_for_files(2, timeout=60)
        poll_until(
            lambda: [s.state for s in sends_to(node, "botched")] == ["done", "done"],
            timeout=60,
            what="both retried sends to be delivered",
        )
        # SIGHUP reloads the destinations' files too: a file that does not load says so.
        assert node.reload_tls()
        trust.write_text("not a certificate\n")
        assert not node.reload_tls()
