"""Expected failures of the commands: one or two lines naming the cause, the README's exit
codes, no traceback, and read commands that create nothing."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pynetdicom import AE

from dicomnode.cli.common import moment
from dicomnode.store.index import Index
from dicomnode.testing.cli import run_dicomnode as dicomnode
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.ports import LOOPBACK, free_port, refusing_port

VERIFICATION = "1.2.840.10008.1.1"


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """The command's error: at most two lines, and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("dicomnode:")]
    assert "Traceback" not in result.stderr, result.stderr
    assert 1 <= len(lines) <= 2, result.stderr
    return "\n".join(lines)


def test_a_port_in_use_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "node.yaml"
        config.write_text(f"node: {{host: {LOOPBACK}}}\nadmin: {{port: {free_port()}}}\n")
        result = dicomnode(
            "serve", "--config", str(config), "--port", str(port), "--storage", str(tmp_path / "v")
        )
    assert result.returncode == 2
    said = _said(result)
    assert f"node.port {port}: in use by another program" in said and "--port" in said


def test_read_commands_without_an_index_say_so_and_create_nothing(tmp_path: Path) -> None:
    for command in (["series"], ["jobs"], ["retry", "send-1"], ["shadow", "report"]):
        result = dicomnode(*command, cwd=tmp_path)
        assert result.returncode == 2, command
        assert "no index at" in _said(result) and "--config" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "pg.yaml"
    config.write_text(
        f'database: {{url: "postgresql+psycopg://u:p@{LOOPBACK}:{refusing_port()}/x"}}\n'
    )
    result = dicomnode("series", "--config", str(config))
    assert result.returncode == 1
    said = _said(result)
    assert "the index database cannot be used" in said and "refused" in said


def test_an_unknown_series_is_named(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    storage.mkdir()
    index = Index(f"sqlite:///{storage / 'dicomnode.db'}")
    index.open()
    index.close()
    (tmp_path / "rules").mkdir()
    result = dicomnode("rules", "explain", "--series", "1.2.3.4", cwd=tmp_path)
    assert result.returncode in (1, 2)
    assert "no stored series with UID 1.2.3.4" in _said(result)


def test_a_peer_that_is_not_listening_is_connection_refused() -> None:
    result = dicomnode("echo", f"PACS@{LOOPBACK}:{refusing_port()}")
    assert result.returncode == 1
    assert "connection refused" in _said(result)


def test_since_times_without_a_zone_are_local_in_series_and_reroute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`series --since` and `reroute --since` read a time the same way: local, as printed."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert moment("2026-12-07T14:00").utcoffset() == timedelta(hours=-5)
        assert moment("2026-07-01").utcoffset() == timedelta(hours=-4)
        assert moment("2026-12-07T14:00+01:00").utcoffset() == timedelta(hours=1)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_wrong_called_ae_title_is_a_rejection_that_names_the_fix() -> None:
    with StoreSCP(ae_title="ARCHIVE", extra_args=["--refuse"]) as refusing:
        result = dicomnode("echo", f"ARCHIVE@{LOOPBACK}:{refusing.port}")
    assert result.returncode == 1
    assert "association rejected" in _said(result)
    peer = AE(ae_title="ARCHIVE")
    peer.require_called_aet = True
    peer.add_supported_context(VERIFICATION)
    server = peer.start_server((LOOPBACK, 0), block=False)
    try:
        port = server.server_address[1]
        wrong = dicomnode("echo", f"PACS@{LOOPBACK}:{port}")
    finally:
        server.shutdown()
    assert wrong.returncode == 1
    said = _said(wrong)
    assert "association rejected (service-user, called-AE-title-not-recognized" in said
    assert "check the AE title we call (ae_title)" in said


def test_a_storage_folder_that_cannot_be_made_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = dicomnode(
        "serve", "--storage", str(tmp_path / "a-file" / "var"), "--port", "0", cwd=tmp_path
    )
    assert result.returncode == 2
    said = _said(result)
    assert f"storage.path {tmp_path / 'a-file' / 'var'}: cannot create it" in said
    assert "serve --storage" in said
