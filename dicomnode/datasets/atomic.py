"""Files that appear whole or not at all: written under a temporary name, then renamed.

An export can be interrupted (a full disk, Ctrl-C, a killed job); a resumed one must be
able to trust that a file under its final name is complete. The temporary file lies in the
same folder (a rename within one file system is atomic) and keeps the final name's
suffixes, so writers that choose the format by extension (nibabel's ``.nii.gz``) still do.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` with a temporary path beside ``path``, then rename it to ``path``.

    The file is flushed to disk before the rename; on any error the temporary file is
    removed and ``path`` is left as it was.
    """
    temporary = path.with_name(f".{secrets.token_hex(6)}.part.{path.name}")
    try:
        write(temporary)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
