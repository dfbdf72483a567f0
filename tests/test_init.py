"""``dicomnode init``: from nothing to a SEG and SR at the PACS, editing only its address."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pydicom

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import run_dicomnode as dicomnode
from dicomnode.testing.ports import free_port, wait_for_port
from dicomnode.testing.storescp import StoreSCP


def test_init_serve_and_send_give_a_seg_and_sr_at_the_pacs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = dicomnode("init", str(site))
    assert result.returncode == 0, result.stderr
    config = site / "node.yaml"
    assert "fill in destinations.pacs" in result.stdout
    again = dicomnode("init", str(site))
    assert again.returncode == 2 and "never overwrites" in again.stderr

    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(rows=48, columns=48, slices=8))
    with StoreSCP(output_dir=tmp_path / "pacs") as pacs:
        # The one edit the administrator makes: the PACS's address.
        text = config.read_text("utf-8")
        line = f"  pacs: {{ae_title: {pacs.ae_title}, host: 127.0.0.1, port: {pacs.port}}}"
        edited, count = re.subn(r"^  pacs: \{.*\}$", line, text, flags=re.MULTILINE)
        assert count == 1
        config.write_text(edited, "utf-8")
        check = dicomnode("config", "check", "--config", str(config))
        assert check.returncode == 0, check.stderr
        assert "oneDNN" not in check.stderr, check.stderr  # loaded quietly, once

        port = free_port()
        command = ["serve", "--config", str(config), "--port", str(port)]
        node = subprocess.Popen(
            [sys.executable, "-m", "dicomnode", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, timeout=60, pid=node.pid, alive=lambda: node.poll() is None)
            sent = dicomnode(
                "send", str(series.paths[0].parent), "--to", f"DICOMNODE@127.0.0.1:{port}"
            )
            assert sent.returncode == 0, sent.stderr
            files = pacs.wait_for_files(3, timeout=180)  # SEG, SR, summary image
        finally:
            node.terminate()
            node.wait(timeout=60)
    modalities = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).Modality) for f in files)
    assert modalities == ["OT", "SEG", "SR"]
    assert (site / "var" / "dicomnode.db").exists()  # relative to node.yaml's folder
