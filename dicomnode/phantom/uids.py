"""Deterministic UIDs, so a phantom written twice with the same seed is the same data.

UIDs are hashed under pydicom's root (PS3.5 9.1 allows a registered root plus a suffix
unique within it); each part is length-prefixed because pydicom joins the entropy sources
without a separator, which would make ``("a", "bc")`` and ``("ab", "c")`` collide.
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import UID, generate_uid

_NAMESPACE: Final = "dicomnode.phantom"


def derive_uid(*parts: str) -> UID:
    """The UID of ``parts``: equal parts give equal UIDs, different parts different ones."""
    return generate_uid(entropy_srcs=[f"{len(part)}:{part}" for part in (_NAMESPACE, *parts)])


def derive_digits(count: int, *parts: str) -> str:
    """``count`` decimal digits drawn from the same hash, for short synthetic identifiers."""
    return str(derive_uid(*parts)).rsplit(".", 1)[-1][-count:]


IMPLEMENTATION_CLASS_UID: Final = derive_uid("implementation", "1")
IMPLEMENTATION_VERSION_NAME: Final = "DCMNODE_PHANTOM"  # SH: at most 16 characters
