"""TensorFlow's start-up notices leave fd 2; everything else written meanwhile comes back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import os, sys, threading
    from dicomnode.logs import configure_logging
    from dicomnode.runners.native_stderr import quiet_start_up

    configure_logging(sys.argv[1])
    print("before", file=sys.stderr, flush=True)
    with quiet_start_up():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\\n")
        os.write(2, b"I0000 00:00:1.2 14 port.cc:153] oneDNN custom operations are on.\\n")
        os.write(2, b"I0000 00:00:1.3 14 cpu_feature_guard.cc:227] This binary is optimized\\n")
        os.write(2, b"E0000 a native error an operator needs\\n")
        other = threading.Thread(target=lambda: print("another thread", file=sys.stderr))
        other.start()
        other.join()
        print("python, unflushed", file=sys.stderr, end="\\n")
    print("after", file=sys.stderr, flush=True)
    """
)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_only_the_start_up_notices_go_and_only_below_debug(level: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, level],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stderr.splitlines()
    kept = [
        "before",
        "E0000 a native error an operator needs",
        "another thread",
        "python, unflushed",
        "after",
    ]
    assert [line for line in lines if line in kept] == kept, result.stderr
    noisy = [
        line for line in lines if "oneDNN" in line or "absl::" in line or "cpu_feature" in line
    ]
    assert len(noisy) == (3 if level == "debug" else 0), result.stderr
