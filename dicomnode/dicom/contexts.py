"""What we accept: every storage SOP class, every transfer syntax pynetdicom knows.

Instances are stored exactly as received, so accepting a compressed syntax costs
nothing at ingest; decoding happens later, in the pipeline, where it is needed.
"""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated names

STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)
# Preference when a requestor proposes several syntaxes in one context does not apply:
# pynetdicom accepts the first proposed one we support, i.e. the sender's choice.
TRANSFER_SYNTAXES: tuple[str, ...] = tuple(str(ts) for ts in ALL_TRANSFER_SYNTAXES)
VERIFICATION_SOP_CLASS = str(Verification)
