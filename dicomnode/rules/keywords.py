"""What a ``match`` key may name: DICOM keywords from pydicom's dictionary, plus derived ones.

A keyword's kind decides how its values compare: numeric VRs compare as numbers (``"5"``
in a rule equals ``5.0`` in a dataset), everything else as stripped text.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum
from functools import cache

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_dict, tag_for_keyword


class Kind(Enum):
    """How the values of an attribute compare."""

    NUMBER = "number"
    TEXT = "text"
    BOOLEAN = "boolean"  # a finding's ``present`` (docs/rules.md, "Routing on findings")


@dataclass(frozen=True, slots=True)
class Keyword:
    """A name a rule may match on, and how its values compare."""

    name: str
    kind: Kind
    vr: str  # the DICOM VR, "derived" for the node's own attributes, "finding" for findings

    @property
    def numeric(self) -> bool:
        return self.kind is Kind.NUMBER

    @property
    def source(self) -> str:
        """Where the type comes from, for messages: ``VR DS`` or ``a pipeline finding``."""
        return "a pipeline finding" if self.vr == "finding" else f"VR {self.vr}"


# Attributes the node knows about a series that no dataset carries.
DERIVED: dict[str, Keyword] = {
    "ImageCount": Keyword("ImageCount", Kind.NUMBER, "derived"),
    "CallingAETitle": Keyword("CallingAETitle", Kind.TEXT, "derived"),
    "CalledAETitle": Keyword("CalledAETitle", Kind.TEXT, "derived"),
    "SourceHost": Keyword("SourceHost", Kind.TEXT, "derived"),
}

_NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
# Bulk and binary values (pixel data, curves, LUT data) cannot be written in a rule.
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "NONE"})


class KeywordError(ValueError):
    """A ``match`` key that names nothing a rule can match on; the message says why."""


def resolve(name: str) -> Keyword:
    """The keyword ``name`` names; raises KeywordError with suggestions."""
    if name in DERIVED:
        return DERIVED[name]
    tag = tag_for_keyword(name)
    if tag is None or not dictionary_has_tag(tag):
        raise KeywordError(f"unknown DICOM keyword{_suggest(name)}")
    vrs = dictionary_VR(tag).split(" or ")
    if "SQ" in vrs:
        raise KeywordError("a sequence (VR SQ) cannot be matched; match a simple attribute")
    if any(vr in _BINARY_VRS for vr in vrs):
        raise KeywordError(f"binary data (VR {dictionary_VR(tag)}) cannot be matched")
    kind = Kind.NUMBER if all(vr in _NUMERIC_VRS for vr in vrs) else Kind.TEXT
    return Keyword(name, kind, dictionary_VR(tag))


def kind_of(name: str) -> Kind:
    """How values of ``name`` compare; text for names a rule could not use."""
    try:
        return resolve(name).kind
    except KeywordError:
        return Kind.TEXT


def is_dicom_keyword(name: str) -> bool:
    """Whether ``name`` is in pydicom's dictionary (derived attributes are not)."""
    tag = tag_for_keyword(name)
    return tag is not None and dictionary_has_tag(tag)


def _suggest(name: str) -> str:
    folded = _by_lower_case().get(name.lower())
    if folded is not None:
        return f" (keywords are case-sensitive: did you mean {folded}?)"
    close = difflib.get_close_matches(name, _all_names(), n=3, cutoff=0.75)
    if not close:
        return ""
    return f" (did you mean {' or '.join(close)}?)"


@cache
def _all_names() -> tuple[str, ...]:
    return (*DERIVED, *keyword_dict)


@cache
def _by_lower_case() -> dict[str, str]:
    return {name.lower(): name for name in _all_names()}
