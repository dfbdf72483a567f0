"""highdicom's tables: read once, and the memoised IOD lookup answers as highdicom's own."""

from __future__ import annotations

import pytest
from highdicom import _standard_utils as standard
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    SegmentationStorage,
)

from dicomnode.results import tables

QUESTIONS = [
    ("NumberOfFrames", CTImageStorage, None),
    ("NumberOfFrames", EnhancedCTImageStorage, None),
    ("PixelData", SegmentationStorage, ["IconImageSequence"]),
    ("PixelData", Comprehensive3DSRStorage, ["IconImageSequence"]),
    ("ContentDate", Comprehensive3DSRStorage, None),
]


@pytest.mark.parametrize(("attribute", "sop_class_uid", "exclude"), QUESTIONS)
def test_the_memoised_lookup_answers_as_highdicoms(
    attribute: str, sop_class_uid: str, exclude: list[str] | None
) -> None:
    tables.prepare()
    memoised = standard.is_attribute_in_iod
    original = memoised.__wrapped__
    assert memoised is not original, "prepare() did not memoise the lookup"
    for _ in range(2):  # the second answer comes from the memo
        assert memoised(attribute, sop_class_uid, exclude) == original(
            attribute, sop_class_uid, exclude
        )


def test_an_unknown_sop_class_still_raises() -> None:
    tables.prepare()
    with pytest.raises(KeyError):
        standard.is_attribute_in_iod("PixelData", "1.2.3.4")
