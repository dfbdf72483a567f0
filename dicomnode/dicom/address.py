"""``AE@HOST:PORT`` addresses, as administrators type them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicomnode.errors import AddressError

_ADDRESS = re.compile(
    r"(?P<ae>[^@]{1,16})@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d{1,5})"
)


@dataclass(frozen=True, slots=True)
class DicomAddress:
    """A remote application entity."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_address(text: str) -> DicomAddress:
    """Parse ``AE@HOST:PORT`` (``AE@[::1]:PORT`` for IPv6)."""
    match = _ADDRESS.fullmatch(text.strip())
    if match is None:
        raise AddressError(f"{text!r} is not an address of the form AE@HOST:PORT")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise AddressError(f"{text!r}: port {port} is outside 1..65535")
    ae_title = match["ae"].strip()
    if not ae_title or "\\" in ae_title:
        raise AddressError(f"{text!r}: {ae_title!r} is not a valid AE title")
    return DicomAddress(ae_title=ae_title, host=match["host"].strip("[]"), port=port)
