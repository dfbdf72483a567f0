"""How the harness runs DCMTK and GDCM executables.

Facts about DCMTK 3.6.7 as Debian ships it, which every DCMTK peer here rests on:

- Nagle's algorithm stays on unless ``TCP_NODELAY=1`` is in the environment (the build
  reads an unset variable as 0). With it on, every C-STORE waits for a delayed ACK:
  28 CT images took 1.37 s instead of 0.11 s. Both ends get ``TCP_NODELAY=1`` by default.
- Executables are called by absolute path: a virtualenv with pynetdicom also has scripts
  named ``storescu`` and ``storescp``.
"""

from __future__ import annotations

from pathlib import Path

BIN = Path("/usr/bin")


def nodelay_env(tcp_nodelay: bool) -> dict[str, str]:
    """The environment that switches Nagle's algorithm off (or explicitly on) in DCMTK."""
    return {"TCP_NODELAY": "1" if tcp_nodelay else "0"}
