"""Our ``Code`` values as highdicom's coded concepts (kept apart so ``codes`` stays pure)."""

from __future__ import annotations

import highdicom as hd

from dicomnode.results.codes import Code


def coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)
