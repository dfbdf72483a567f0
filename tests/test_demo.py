"""``dicomnode demo`` runs the whole flow and checks the phantoms' answers itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_passes_and_reports_values_within_tolerance(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dicomnode", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "all values within tolerance" in output
    for quantity in ("Fat volume (ml)", "Bone mean (HU)", "SUVmax", "MTV (ml)", "TLG (g)"):
        assert quantity in output
    assert output.count(" ok ") >= 10
    assert "ct-tissue-reference" in output and "pet-suv-reference" in output
    assert "pipeline-1" in output  # jobs named as `dicomnode jobs` and the page name them
    # The CT model ran in TensorFlow, quietly: none of its start-up notices
    # (runners/native_stderr.py).
    assert "oneDNN" not in output and "absl::InitializeLog" not in output, output
    # The results are files at the stand-in PACS.
    assert any((tmp_path / "demo" / "pacs" / "spool" / "objects").rglob("*.dcm"))

    # Run again in the same folder: refused, never an old run's results reported as new.
    again = subprocess.run(
        [sys.executable, "-m", "dicomnode", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2
    assert "not empty" in again.stdout and "within tolerance" not in again.stdout
