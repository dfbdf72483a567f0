"""The ``dicomnode`` command as an operator runs it, in a child process, for tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_dicomnode(
    *args: str, cwd: Path | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m dicomnode ARGS``: exit code, stdout and stderr as text; never raises on
    a non-zero exit (tests check ``returncode`` themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "dicomnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
