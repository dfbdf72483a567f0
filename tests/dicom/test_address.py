"""``AE@HOST:PORT`` parsing."""

from __future__ import annotations

import pytest

from dicomnode.dicom.address import DicomAddress, parse_address
from dicomnode.errors import AddressError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@127.0.0.1:4242", DicomAddress("PACS", "127.0.0.1", 4242)),
        ("  ORTHANC@localhost:104 ", DicomAddress("ORTHANC", "localhost", 104)),
        ("V6@[::1]:11112", DicomAddress("V6", "::1", 11112)),
    ],
)
def test_valid_addresses(text: str, expected: DicomAddress) -> None:
    assert parse_address(text) == expected


def test_str_round_trips() -> None:
    for text in ("PACS@127.0.0.1:4242", "V6@[::1]:11112"):
        assert str(parse_address(text)) == text


@pytest.mark.parametrize(
    "text",
    ["PACS@127.0.0.1", "127.0.0.1:4242", "PACS@host:0", "PACS@host:70000", "A\\B@h:1",
     "SEVENTEEN_CHARS_X@h:1", "@h:1"],
)  # fmt: skip
def test_invalid_addresses_name_the_expected_form(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)
