"""The ``dicomnode`` command as an operator runs it, in a child process, for tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicomnode.config import Config


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


def config_beside(node: Config, folder: Path) -> Path:
    """A configuration file for commands run beside a running node: its storage and its
    index (the database may be PostgreSQL, which the storage path alone does not say)."""
    path = folder / "cli.yaml"
    path.write_text(
        f"storage: {{path: {node.storage.path}}}\ndatabase: {{url: '{node.database_url}'}}\n"
    )
    return path
