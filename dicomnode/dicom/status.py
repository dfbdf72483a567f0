"""Named DIMSE status codes dicomnode returns or interprets (PS3.4, PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    SUCCESS = 0x0000
    # PS3.4 Table B.2-1, C-STORE
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # PS3.7 C.5.1: refused, SOP class not supported
    SOP_CLASS_NOT_SUPPORTED = 0x0122


def describe(status: int) -> str:
    """A short name for a status code, for logs and CLI summaries."""
    try:
        return Status(status).name.lower()
    except ValueError:
        if 0xA700 <= status <= 0xA7FF:
            return "out_of_resources"
        if 0xA900 <= status <= 0xA9FF:
            return "dataset_mismatch"
        if 0xC000 <= status <= 0xCFFF:
            return "cannot_understand"
        if 0xB000 <= status <= 0xBFFF:
            return "warning"
        return f"status_0x{status:04X}"


def is_success(status: int) -> bool:
    return status == Status.SUCCESS


def is_warning(status: int) -> bool:
    """PS3.7 C.4: 0x0001 and 0xBxxx are warnings: the instance was stored."""
    return status == 0x0001 or 0xB000 <= status <= 0xBFFF


def is_permanent_failure(status: int) -> bool:
    """A failure that retrying the same instance will not cure (PS3.4 B.2.3, PS3.7 C).

    0xA7xx (out of resources) is temporary; 0xA9xx (dataset mismatch), 0xCxxx (cannot
    understand) and 0x01xx (refused: SOP class not supported, not authorised) are not.
    """
    if is_success(status) or is_warning(status):
        return False
    return not 0xA700 <= status <= 0xA7FF
