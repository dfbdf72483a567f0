"""What the SCU proposes for an instance, and how a refusal of it reads.

Each file goes as it is stored where the peer accepts its syntax; beside it, a context of
its own offers Implicit VR Little Endian, which every node must accept (PS3.5 10.1), and
for a compressed file Explicit VR Little Endian too, so a peer that takes neither the
file's syntax nor Explicit VR still receives the instance, converted. A fallback in a
context of its own, not a second syntax in the exact one, keeps the choice with us: an
acceptor picks one syntax per context, and would make us convert what it could take as
it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
IMPLICIT = UID(ImplicitVRLittleEndian)
UNCOMPRESSED = (UID(ExplicitVRLittleEndian), IMPLICIT)

Context = tuple[str, tuple[str, ...]]  # (SOP class UID, transfer syntax UIDs)


def contexts_for(sop_class_uid: str, transfer_syntax_uid: str) -> list[Context]:
    """The exact context, then the fallback for a file in ``transfer_syntax_uid``."""
    syntax = UID(transfer_syntax_uid)
    exact = (sop_class_uid, (str(syntax),))
    if syntax == IMPLICIT:
        return [exact]
    if syntax == ExplicitVRLittleEndian:
        return [exact, (sop_class_uid, (str(IMPLICIT),))]
    return [exact, (sop_class_uid, tuple(str(ts) for ts in UNCOMPRESSED))]


def offered(sop_class_uid: str, transfer_syntax_uid: str) -> list[str]:
    """Every transfer syntax proposed for such a file, in proposal order."""
    contexts = contexts_for(sop_class_uid, transfer_syntax_uid)
    return list(dict.fromkeys(ts for _sop, syntaxes in contexts for ts in syntaxes))


def refusal(sop_class_uid: str, syntaxes: Sequence[str]) -> str:
    """Why an instance cannot go: its SOP class, by name and UID, and what was offered."""
    names = ", ".join(UID(ts).name for ts in syntaxes)
    return f"no presentation context accepted for {sop_class_words(sop_class_uid)}; offered {names}"


def sop_class_words(uid: str) -> str:
    """``CT Image Storage (1.2.840.10008.5.1.4.1.1.2)``; a UID pydicom does not name, alone."""
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def proposal_words(files: Iterable[tuple[str, str]], limit: int = 4) -> str:
    """The SOP classes of (SOP class, syntax) pairs with the syntaxes offered for each."""
    by_class: dict[str, list[str]] = {}
    for sop_class_uid, transfer_syntax_uid in files:
        syntaxes = by_class.setdefault(sop_class_uid, [])
        syntaxes.extend(
            ts for ts in offered(sop_class_uid, transfer_syntax_uid) if ts not in syntaxes
        )
    parts = [
        f"{sop_class_words(sop)} in {', '.join(UID(ts).name for ts in syntaxes)}"
        for sop, syntaxes in list(by_class.items())[:limit]
    ]
    more = len(by_class) - limit
    return "; ".join(parts) + (f"; and {more} more SOP classes" if more > 0 else "")
