"""The README's quick start, run as written: a node, then the commands "from another shell".

Only what cannot be the same here is changed: the port (a free one instead of 11112, which
another test or program may hold), ``.venv/bin/dicomnode`` (this interpreter's module) and
``../shared/dicom`` (where ``DICOMNODE_TEST_DATA`` says the shared data is).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from dicomnode.testing.ports import free_port, wait_for_port

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start() -> list[str]:
    """The commands of the sh block after "From another shell" in "Run it"."""
    text = README.read_text("utf-8")
    after = text.index("From another shell")
    block = re.search(r"```sh\n(.*?)```", text[after:], re.DOTALL)
    assert block is not None, "the README lost its quick-start commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_quick_start_runs_as_written(tmp_path: Path, real_ct_dir: Path) -> None:
    commands = _quick_start()
    assert [shlex.split(c)[1] for c in commands] == ["echo", "send", "series"]
    port = free_port()
    shared = real_ct_dir.parent  # the README's ../shared/dicom
    # `.venv/bin/dicomnode serve` in the folder the README runs it from (./var, ./rules).
    node = subprocess.Popen(
        [sys.executable, "-m", "dicomnode", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, pid=node.pid, alive=lambda: node.poll() is None)
        outputs = []
        for command in commands:
            line = command.replace(":11112", f":{port}").replace("../shared/dicom", str(shared))
            words = shlex.split(line)
            assert words[0] == ".venv/bin/dicomnode", command
            result = subprocess.run(
                [sys.executable, "-m", "dicomnode", *words[1:]],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            outputs.append(result)
    finally:
        node.terminate()
        node.wait(timeout=60)
    echo, send, series = outputs
    assert "C-ECHO OK" in echo.stdout
    assert "DICOMDIR" in send.stderr and "0 failed" in send.stdout
    assert "CT" in series.stdout
