"""DICOMweb destinations: a rule forwards by STOW-RS to Orthanc's DICOMweb plugin.

One Orthanc (basic authentication on) serves the module; one node sends a series to it
with the right password, with a wrong one and to a port nobody listens on, so that a
single completion shows delivery, a permanent refusal and a retried failure.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from dicomnode.config import parse_config
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.dicomweb import WebSettings, parse_stow_response, qido_echo, stow_batches
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import ConfigError, PeerError
from dicomnode.node import Node, check_config
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.orthanc import DICOMWEB_PLUGIN, Orthanc
from dicomnode.testing.ports import refusing_port
from dicomnode.testing.process import poll_until

USER, PASSWORD = "dicomnode", "right-password"
FAST_RETRY = {"initial_seconds": 0.5, "max_seconds": 1.0, "max_age_seconds": 3600}

pytestmark = pytest.mark.skipif(
    not DICOMWEB_PLUGIN.exists(), reason="Orthanc's DICOMweb plugin (orthanc-dicomweb) is absent"
)


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    with Orthanc(dicomweb=True, users={USER: PASSWORD}) as server:
        yield server


def dataset_bytes(data: bytes) -> bytes:
    """The dataset part of a DICOM file's bytes (after preamble, DICM and group 0002)."""
    stream = BytesIO(data)
    read_preamble(stream, force=False)
    _read_file_meta_info(stream)
    return data[stream.tell() :]


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def web_destination(url: str, password_file: Path | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"kind": "dicomweb", "url": url, "retry": FAST_RETRY}
    if password_file is not None:
        destination["auth"] = {"username": USER, "password_file": str(password_file)}
    return destination


def test_a_series_is_stored_by_stow_rs_a_wrong_password_fails_at_once_a_dead_one_retries(
    node_factory: Callable[..., Node], orthanc: Orthanc, tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        "- {name: web, match: {Modality: CT}, forward_to: [web, wrong, down]}\n"
    )
    right = secret(tmp_path / "right.txt", PASSWORD)
    wrong = secret(tmp_path / "wrong.txt", "not-the-password")
    down_url = f"http://127.0.0.1:{refusing_port()}/dicom-web"
    node = node_factory(
        destinations={
            "web": web_destination(orthanc.dicomweb_url, right),
            "wrong": web_destination(orthanc.dicomweb_url, wrong),
            "down": web_destination(down_url),
        }
    )
    spec = CTPhantomSpec(slices=3, rows=16, columns=16, seed=31, series_description="WEB")
    series = write_ct_phantom(tmp_path / "ct", spec)
    files = [f for f in map(inspect_file, series.paths) if isinstance(f, SendableFile)]
    results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
    assert all(r.ok for r in results)

    def by_destination(state: str) -> dict[str, Any]:
        return {s.destination: s for s in node.outbox.queue.list_sends(state)}

    poll_until(
        lambda: "web" in by_destination("done") and "wrong" in by_destination("failed"),
        timeout=60,
        what="the send to web done and the one to wrong failed",
    )
    poll_until(
        lambda: any(s.attempts >= 2 for s in node.outbox.queue.list_sends("pending")),
        timeout=30,
        what="a second attempt to the dead service",
    )
    done = by_destination("done")["web"]
    assert (done.sent_count, done.instance_count) == (3, 3)
    found = orthanc.get_json(f"/dicom-web/studies/{series.study_instance_uid}/series")
    (stored,) = found
    assert stored["0020000E"]["Value"] == [series.series_instance_uid]
    assert stored["00201209"]["Value"] == [3]  # NumberOfSeriesRelatedInstances
    # Sent as stored: each dataset arrives byte for byte (no decoding, no re-encoding).
    sources = {dataset_bytes(p.read_bytes()) for p in series.paths}
    assert {dataset_bytes(orthanc.instance_file(i)) for i in orthanc.instances()} >= sources

    refused = by_destination("failed")["wrong"]
    assert refused.attempts == 1
    assert refused.reason is not None
    assert "authentication refused (HTTP 401" in refused.reason
    assert "destinations.wrong.auth" in refused.reason

    dead = by_destination("pending")["down"]
    assert dead.reason is not None and f"{down_url}: connection refused" in dead.reason
    outcomes = {a.outcome for a in node.outbox.queue.attempts(dead.id)}
    assert outcomes == {"temporary"}


def test_echo_of_a_dicomweb_destination_is_a_qido_rs_query(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    right = secret(tmp_path / "right.txt", PASSWORD)
    wrong = secret(tmp_path / "wrong.txt", "nope")
    config = tmp_path / "node.yaml"
    config.write_text(
        json.dumps(
            {
                "storage": {"path": str(tmp_path / "var")},
                "destinations": {
                    "web": web_destination(orthanc.dicomweb_url, right),
                    "wrong": web_destination(orthanc.dicomweb_url, wrong),
                },
            }
        )
    )
    ok = run_dicomnode("echo", "web", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert f"{orthanc.dicomweb_url}: QIDO-RS OK" in ok.stdout
    refused = run_dicomnode("echo", "wrong", "--config", str(config))
    assert refused.returncode == 1
    assert "authentication refused" in refused.stderr
    assert "destinations.wrong.auth" in refused.stderr

    down = WebSettings(f"http://127.0.0.1:{refusing_port()}/dicom-web", "destinations.down")
    with pytest.raises(PeerError, match="connection refused") as caught:
        qido_echo(down)
    assert not caught.value.permanent


def test_a_dicomweb_destination_needs_a_url_and_private_auth_files(tmp_path: Path) -> None:
    where = tmp_path / "node.yaml"
    with pytest.raises(ConfigError) as missing:
        parse_config("destinations:\n  web: {kind: dicomweb}\n", where)
    assert f"{where}:2: destinations.web.url: Field required" in str(missing.value)
    with pytest.raises(ConfigError) as dimse_keys:
        parse_config("destinations:\n  web: {kind: dicomweb, url: 'ftp://x', port: 1}\n", where)
    assert "destinations.web.url: Value error, url must be http:// or https://" in str(
        dimse_keys.value
    )
    assert "destinations.web.port: unknown key" in str(dimse_keys.value)

    token = secret(tmp_path / "token", "abc123", mode=0o644)
    text = textwrap.dedent(
        f"""
        storage: {{path: {tmp_path / "var"}}}
        admin: {{enabled: false}}
        destinations:
          web:
            kind: dicomweb
            url: https://127.0.0.1:8042/dicom-web
            auth: {{bearer_token_file: {token}}}
        """
    )
    config = parse_config(text, where)
    with pytest.raises(ConfigError) as exposed:
        check_config(config)
    message = str(exposed.value)
    assert f"destinations.web.auth.bearer_token_file: {token} is readable by every user" in message
    assert f"chmod 600 {token}" in message
    assert "abc123" not in message
    token.chmod(0o600)
    check_config(config)  # the same file, private now, is accepted
    (token.parent / "token").unlink()
    with pytest.raises(ConfigError, match="bearer_token_file: cannot read"):
        check_config(config)


def _stow_answer(stored: list[str], failed: dict[str, int]) -> bytes:
    def item(uid: str, **more: Any) -> dict[str, Any]:
        return {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00081155": {"vr": "UI", "Value": [uid]},
            **more,
        }

    return json.dumps(
        {
            "00081199": {"vr": "SQ", "Value": [item(uid) for uid in stored]},
            "00081198": {
                "vr": "SQ",
                "Value": [
                    item(uid, **{"00081197": {"vr": "US", "Value": [reason]}})
                    for uid, reason in failed.items()
                ],
            },
        }
    ).encode()


def test_the_stow_rs_response_decides_each_instance() -> None:
    answer = _stow_answer(["1.1", "1.3"], {"1.2": 0xA900, "1.4": 0xA700})
    verdicts = parse_stow_response(409, answer)
    assert verdicts is not None
    assert sorted(verdicts) == ["1.1", "1.2", "1.3", "1.4"]
    assert verdicts["1.1"].ok and verdicts["1.3"].ok
    assert not verdicts["1.2"].ok and verdicts["1.2"].permanent
    assert "0xA900" in verdicts["1.2"].note
    assert not verdicts["1.4"].ok and not verdicts["1.4"].permanent  # out of resources
    # An error page for the whole request is no per-instance answer.
    assert parse_stow_response(401, b"<html>Unauthorized</html>") is None
    assert parse_stow_response(200, b"") == {}


def test_files_are_batched_by_size_and_a_large_one_goes_alone() -> None:
    def file(size: int) -> SendableFile:
        return SendableFile(Path(f"f{size}"), "1.2", "1.3", "1.2.840.10008.1.2.1", size)

    batches = stow_batches([file(size) for size in (4, 5, 20, 3, 3)], 10)
    assert [[f.size for f in batch] for batch in batches] == [[4, 5], [20], [3, 3]]
