"""How the objects dicomnode writes identify their maker and themselves.

SEG and SR carry the Enhanced General Equipment module (PS3.3 C.7.5.2; all Type 1 for
SEG): manufacturer, model, serial number and software version. dicomnode is the device;
the model that produced the content is named separately, in each object's algorithm
identification.
"""

from __future__ import annotations

import re
from typing import Final

from pydicom.uid import generate_uid

from dicomnode import __version__
from dicomnode.results.content import AlgorithmInfo

MANUFACTURER: Final = "dicomnode"
MODEL_NAME: Final = "dicomnode"
SOFTWARE_VERSION: Final = __version__
# Type 1 in Enhanced General Equipment; dicomnode is software, so the "serial number" names
# the product rather than a box (no host name: it would leak into every result sent out).
DEVICE_SERIAL_NUMBER: Final = "dicomnode"

_CS_INVALID: Final = re.compile(r"[^A-Z0-9 _]")
_CS_MAX: Final = 16  # PS3.5 6.2


def new_uid() -> str:
    """A fresh UID for a new series or instance (``2.25.`` + a random 128-bit number)."""
    return str(generate_uid(prefix=None))


def device_uid(algorithm: AlgorithmInfo) -> str:
    """The SR's device observer UID: stable for one model version, so reports group by it."""
    return str(
        generate_uid(prefix=None, entropy_srcs=["dicomnode", algorithm.name, algorithm.version])
    )


def content_label(algorithm: AlgorithmInfo) -> str:
    """Content Label (CS, 16 characters of ``A-Z 0-9 _ space``) from the model's name."""
    label = _CS_INVALID.sub("_", algorithm.name.upper())[:_CS_MAX].strip()
    return label or "SEGMENTATION"


def truncated(text: str, limit: int = 64) -> str:
    """``text`` cut to fit an LO (64 characters)."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
