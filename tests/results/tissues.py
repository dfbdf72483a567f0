"""The phantom, segment specs and algorithm the result-writer tests share.

A module of its own, not the conftest: several test folders have a ``conftest.py``, and
``from conftest import ...`` would find whichever was imported last.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dicomnode.phantom import CTPhantomSpec
from dicomnode.results import AlgorithmInfo, Code, SegmentSpec, codes

# 64x64 pixels of 6 mm cover the whole phantom body, so every tissue is on the slices.
SPEC = CTPhantomSpec(slices=8, rows=64, columns=64, pixel_spacing_mm=6.0)
LIVER = Code("10200004", "SCT", "Liver")
TISSUES = (
    SegmentSpec(1, "Fat", codes.TISSUE, codes.FAT, color=(255, 200, 0)),
    SegmentSpec(2, "Soft tissue", codes.TISSUE, codes.SOFT_TISSUE),
    SegmentSpec(3, "Liver", codes.ANATOMICAL_STRUCTURE, LIVER, description="the phantom liver"),
    SegmentSpec(4, "Bone", codes.TISSUE, codes.BONE),
)
ALGORITHM = AlgorithmInfo("ct-tissue-reference", "1.0.0")
Validator = Callable[[Path], str]
