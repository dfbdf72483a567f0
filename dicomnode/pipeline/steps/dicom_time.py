"""DICOM DA, TM and DT strings (PS3.5 Table 6.2-1) as Python dates and times.

Components after the first may be omitted (``HH``, ``HHMM``, ``YYYYMM`` ...); fractions have
up to six digits. The ACR-NEMA forms ``HH:MM:SS`` and ``YYYY.MM.DD``, still written by some
old equipment, are read too. A DT's UTC offset (``&ZZXX``) is dropped: the SUV calculation
compares it with TM values, which have none and are in the scanner's local time.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?(?:[+-]\d{4})?")


def _micro(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


def parse_da(value: str) -> date:
    match = _DA.fullmatch(value.strip().replace(".", ""))
    if match is None:
        raise ValueError(f"{value!r} is not a DICOM date (YYYYMMDD)")
    year, month, day = (int(part) for part in match.groups())
    return date(year, month, day)


def parse_tm(value: str) -> time:
    match = _TM.fullmatch(value.strip().replace(":", ""))
    if match is None:
        raise ValueError(f"{value!r} is not a DICOM time (HHMMSS.FFFFFF)")
    hour, minute, second, fraction = match.groups()
    # A leap second (SS = 60, allowed by PS3.5) is read as the last instant of its minute.
    if second == "60":
        second, fraction = "59", "999999"
    return time(int(hour), int(minute or 0), int(second or 0), _micro(fraction))


def parse_dt(value: str) -> datetime:
    match = _DT.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF)")
    year, month, day, hour, minute, second, fraction = match.groups()
    if second == "60":
        second, fraction = "59", "999999"
    return datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        _micro(fraction),
    )
