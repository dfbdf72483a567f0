"""Plain values that cross stage boundaries (DICOM layer <-> store), free of library types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class Peer:
    """The remote end of an association, as it introduced itself."""

    calling_ae: str
    called_ae: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """One C-STORE request: the command's identifiers and the dataset bytes as received."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes | memoryview
    peer: Peer
    association_id: int


class StoreOutcome(Enum):
    """What storing a received instance did."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID and same bytes: nothing new
    REPLACED = "replaced"  # same SOP Instance UID, new bytes: the newer copy wins


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """The result of a durable store: safe to acknowledge."""

    instance_id: int
    series_id: int
    outcome: StoreOutcome
    warning: str | None = None  # something the sender should hear, e.g. a non-conformant UID
