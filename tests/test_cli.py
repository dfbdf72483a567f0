"""The ``dicomnode`` command as an administrator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import run_dicomnode as dicomnode
from dicomnode.testing.dcmtk import StoreSCP


def test_help_lists_the_commands_and_does_not_import_tensorflow() -> None:
    probe = (
        "import sys; from dicomnode.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'pynetdicom', 'sqlalchemy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    for command in ("serve", "config", "echo", "send", "series"):
        assert command in result.stdout
    assert "HEAVY []" in result.stdout


def test_every_command_has_help() -> None:
    for command in (["serve"], ["config", "check"], ["echo"], ["send"], ["series"]):
        result = dicomnode(*command, "--help")
        assert result.returncode == 0, command
        assert "usage: dicomnode" in result.stdout


def test_config_check_accepts_a_valid_file_and_names_file_line_and_key_otherwise(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("node:\n  ae_title: NODE1\n  port: 11113\n")
    result = dicomnode("config", "check", "--config", str(good))
    assert result.returncode == 0
    assert "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  ae_title: NODE1\n  prot: 11113\ndestinations:\n  pacs: {host: x}\n")
    result = dicomnode("config", "check", "--config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: node.prot: unknown key" in result.stderr
    assert f"{bad}:5: destinations.pacs.ae_title: Field required" in result.stderr


def test_config_check_without_a_file_checks_the_embedded_default(tmp_path: Path) -> None:
    result = dicomnode("config", "check", cwd=tmp_path)
    assert result.returncode == 0
    assert "built-in defaults: OK (AE DICOMNODE on port 11112" in result.stdout


def test_echo_reports_success_and_failure(node: Node) -> None:
    ok = dicomnode("echo", f"DICOMNODE@127.0.0.1:{node.scp.port}")
    assert ok.returncode == 0
    assert "C-ECHO OK (0x0000)" in ok.stdout

    wrong_ae = dicomnode("echo", f"SOMEONE@127.0.0.1:{node.scp.port}")
    assert wrong_ae.returncode == 1
    assert "association rejected" in wrong_ae.stderr

    malformed = dicomnode("echo", "no-port-here")
    assert malformed.returncode == 2
    assert "AE@HOST:PORT" in malformed.stderr


def test_send_walks_folders_skips_non_dicom_and_summarises(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_ct_phantom(folder / "a", CTPhantomSpec(slices=5, rows=32, columns=32))
    write_ct_phantom(folder / "b" / "deeper", CTPhantomSpec(slices=3, rows=32, columns=32, seed=1))
    (folder / "notes.txt").write_text("not DICOM")
    with StoreSCP(output_dir=tmp_path / "received") as scp:
        result = dicomnode("send", str(folder), "--to", f"{scp.ae_title}@127.0.0.1:{scp.port}")
        assert result.returncode == 0, result.stderr
        assert "8 of 8 sent, 0 failed, 1 skipped" in result.stdout
        assert "notes.txt" in result.stderr
        scp.wait_for_files(8, timeout=30)


def test_send_reports_failures_per_file_and_exits_1(node: Node, tmp_path: Path) -> None:
    import pydicom

    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=32, columns=32))
    broken = pydicom.dcmread(series.paths[0])
    del broken.StudyInstanceUID
    broken.save_as(series.paths[0])
    result = dicomnode("send", str(tmp_path / "ct"), "--to", f"DICOMNODE@127.0.0.1:{node.scp.port}")
    assert result.returncode == 1
    assert "1 of 2 sent, 1 failed" in result.stdout
    assert "StudyInstanceUID is missing" in result.stderr


def test_series_lists_what_arrived_as_a_table_and_as_json(node: Node, tmp_path: Path) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=3, rows=32, columns=32))
    sent = dicomnode("send", str(tmp_path / "ct"), "--to", f"DICOMNODE@127.0.0.1:{node.scp.port}")
    assert sent.returncode == 0
    config = tmp_path / "node.yaml"
    config.write_text(f"storage:\n  path: {node.config.storage.path}\n")

    listed = dicomnode("series", "--config", str(config), "--json")
    assert listed.returncode == 0
    (row,) = json.loads(listed.stdout)
    assert row["series_uid"] == series.series_instance_uid
    assert row["modality"] == "CT"
    assert row["instance_count"] == 3
    assert row["state"] in {"receiving", "complete"}

    table = dicomnode("series", "--config", str(config))
    assert table.returncode == 0
    assert "PHANTOM CT ABDOMEN" in table.stdout


def test_send_of_a_copied_cd_folder_skips_its_dicomdir_and_exits_0(
    tmp_path: Path, real_ct_dir: Path, real_ct_images: list[Path]
) -> None:
    """The README's quick start sends the shared CT folder, DICOMDIR (DIRFILE) and all."""
    with StoreSCP(output_dir=tmp_path / "received") as scp:
        result = dicomnode("send", str(real_ct_dir), "--to", f"{scp.ae_title}@127.0.0.1:{scp.port}")
        assert result.returncode == 0, result.stderr
        assert f"{len(real_ct_images)} of {len(real_ct_images)} sent, 0 failed" in result.stdout
        assert "DIRFILE" in result.stderr and "DICOMDIR" in result.stderr
        scp.wait_for_files(len(real_ct_images), timeout=30)


def test_send_of_a_path_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-study"
    result = dicomnode("send", str(missing), "--to", "PACS@127.0.0.1:4242")
    assert result.returncode == 2
    assert f"{missing}: no such file or folder" in result.stderr


def test_serve_takes_port_ae_title_and_storage_for_a_quick_trial(tmp_path: Path) -> None:
    from dicomnode.testing.ports import free_port, wait_for_port

    port, admin = free_port(), free_port()
    config = tmp_path / "admin.yaml"
    config.write_text(f"admin: {{port: {admin}}}\n")  # no clash with another test's 8080
    storage = tmp_path / "trial"
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomnode", "serve", "--config", str(config),
         "--port", str(port), "--ae-title", "TRIAL", "--storage", str(storage)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60, pid=process.pid, alive=lambda: process.poll() is None)
        echo = subprocess.run(
            ["/usr/bin/echoscu", "-aec", "TRIAL", "127.0.0.1", str(port)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert echo.returncode == 0, echo.stderr
        assert (storage / "dicomnode.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert process.returncode == 0


def test_serve_overrides_are_checked_like_the_configuration() -> None:
    result = dicomnode("serve", "--ae-title", "MUCH-TOO-LONG-FOR-AN-AE", "--port", "11112")
    assert result.returncode == 2
    assert result.stderr.startswith("dicomnode: --ae-title: ")
    result = dicomnode("serve", "--port", "70000")
    assert result.returncode == 2 and "--port:" in result.stderr
    result = dicomnode("serve", "--workers", "2", "--port", "11112")
    assert result.returncode == 2 and "one process" in result.stderr
