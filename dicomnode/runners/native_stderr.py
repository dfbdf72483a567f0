"""TensorFlow's start-up lines, kept off stderr unless the node logs at debug.

TensorFlow 2.21 logs through absl before absl is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
does not reach those lines, and the oneDNN notice comes twice (once per shared library
that carries it). Only file descriptor 2 sees them. While TensorFlow imports, fd 2 is
pointed at a temporary file; afterwards every captured line that is not one of these
notices is written back, in order: another thread's message is late by the import's few
seconds, never lost.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# What TensorFlow prints on every start and an operator cannot act on.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\]"
    r"|^To enable the following instructions:.*rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc:\d+\] computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def is_noise(line: str) -> bool:
    return START_UP_NOISE.search(line) is not None


@contextmanager
def quiet_start_up() -> Iterator[None]:
    """Drop TensorFlow's start-up notices from fd 2 within this block (not at debug)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not is_noise(line)
            ]
            if kept:
                os.write(2, "".join(kept).encode())
