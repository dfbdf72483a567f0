"""DCMTK echoscu: is a peer there and answering?"""

from __future__ import annotations

import subprocess

from dicomnode.testing.executables import BIN
from dicomnode.testing.ports import LOOPBACK, require_loopback


def echoscu(
    *,
    ae_title: str,
    port: int,
    host: str = LOOPBACK,
    calling_ae: str = "ECHOSCU",
    timeout: float = 10.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO; ``returncode`` 0 means the peer answered Success."""
    argv = [str(BIN / "echoscu"), "-v", "-aet", calling_ae, "-aec", ae_title]
    argv += [require_loopback(host), str(port)]
    return subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
