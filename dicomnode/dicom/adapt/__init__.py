"""Where dicomnode replaces pynetdicom internals, all behind one ``install()``.

pynetdicom's receiving path is general and slow where the node is specific and hot (why,
module by module, in their docstrings):

- ``reactor``: select()-based DUL and association loops instead of 1 ms polling;
- ``pdata``: P-DATA sent in pre-encoded blocks, C-STORE requests gathered without a
  ``Dataset``;
- ``direct``: C-STORE requests served on the DUL's thread, PDUs read ahead;
- ``commandset``: C-STORE command sets encoded and decoded with ``struct``;
- ``cstore``: a stored file sent without pynetdicom's per-call parsing.

They copy or replace private code of one pynetdicom version, ``SUPPORTED``, to which
``pyproject.toml`` pins the dependency (a test checks the two agree with what is
installed). With any other version, or with ``DICOMNODE_PYNETDICOM_STOCK=1`` (to
compare, or to rule the adaptations out), nothing is replaced and pynetdicom runs its own
path; the node's limits on hostile peers hold on both (``dicomnode.dicom.guard``,
``dicomnode.dicom.limits``).
"""

from __future__ import annotations

import os

import pynetdicom

from dicomnode.dicom.adapt import direct, pdata, reactor
from dicomnode.logs import get_logger

__all__ = ["STOCK_VARIABLE", "SUPPORTED", "adaptable", "install", "installed"]

log = get_logger(__name__)

SUPPORTED = "3.0.4"
STOCK_VARIABLE = "DICOMNODE_PYNETDICOM_STOCK"


def adaptable() -> bool:
    """Whether this pynetdicom is the one the adaptations copy, and nobody said stock."""
    return pynetdicom.__version__ == SUPPORTED and os.environ.get(STOCK_VARIABLE) != "1"


def installed() -> bool:
    """Whether this process runs the adapted path (``install`` succeeded)."""
    return reactor.installed()


def install() -> bool:
    """Install every adaptation (idempotent); False where pynetdicom keeps its own path."""
    if reactor.installed():
        return True
    if not adaptable():
        log.info(
            "pynetdicom_stock_path",
            version=pynetdicom.__version__,
            reason="stock requested" if pynetdicom.__version__ == SUPPORTED else "other version",
        )
        return False
    reactor.install()
    pdata.install()
    direct.install()
    return True
