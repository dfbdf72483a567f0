"""The series view rules are evaluated on: each keyword's distinct values across a series.

A series is many instances, and an attribute may differ between them (SliceThickness of a
mixed series, ImageType of a localizer among axials). ``SeriesAttributes`` keeps every
distinct value seen, in the order first seen; matching requires a condition to hold for
every one of them. An attribute that no instance has with a non-empty value is missing.

Values are normalised by keyword: numeric VRs become floats, everything else stripped
text; a multi-valued element (``ORIGINAL\\PRIMARY\\AXIAL``) is a tuple of its members.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import IS, DSfloat

from dicomnode.rules.keywords import DERIVED, Kind, is_dicom_keyword, kind_of
from dicomnode.rules.model import Scalar, Value

JSONScalar = str | int | float
JSONValue = JSONScalar | tuple[JSONScalar, ...]


@dataclass(frozen=True, slots=True)
class SeriesAttributes:
    """keyword -> the distinct values of one series (derived attributes included)."""

    values: Mapping[str, tuple[Value, ...]] = field(default_factory=dict)
    series_uid: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    @classmethod
    def from_values(
        cls,
        values: Mapping[str, Any],
        *,
        image_count: int | None = None,
        calling_ae: str | None = None,
        called_ae: str | None = None,
        source_host: str | None = None,
        series_uid: str | None = None,
    ) -> SeriesAttributes:
        """Build from ``keyword -> list of distinct values`` (the index's form).

        Each distinct value is a scalar, or a list/tuple for a multi-valued element, so
        ImageType is ``[["ORIGINAL", "PRIMARY", "AXIAL"]]``. A bare scalar is short for a
        one-value list. ``None`` and empty values are dropped.
        """
        derived: dict[str, Any] = {
            "ImageCount": image_count,
            "CallingAETitle": calling_ae,
            "CalledAETitle": called_ae,
            "SourceHost": source_host,
        }
        normalised: dict[str, tuple[Value, ...]] = {}
        for keyword, raw in (*values.items(), *derived.items()):
            if keyword in derived and raw is None and keyword in values:
                continue  # keep an explicitly given derived value
            distinct = _distinct(keyword, raw)
            if distinct:
                normalised[keyword] = distinct
        return cls(normalised, series_uid)

    def get(self, keyword: str) -> tuple[Value, ...]:
        """The distinct values of ``keyword``; empty when missing."""
        return self.values.get(keyword, ())

    def __contains__(self, keyword: object) -> bool:
        return keyword in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def differs(self, keyword: str) -> bool:
        """Whether the instances of the series disagree on ``keyword``."""
        return len(self.get(keyword)) > 1


def attributes_from_datasets(
    datasets: Iterable[Dataset], keywords: Iterable[str]
) -> dict[str, tuple[JSONValue, ...]]:
    """The distinct values of ``keywords`` across ``datasets``, JSON-friendly.

    DS -> float, IS -> int, PN -> str, a multi-valued element -> tuple. Derived and unknown
    keywords, sequences, binary and empty values are left out.
    """
    wanted = [kw for kw in dict.fromkeys(keywords) if is_dicom_keyword(kw)]
    found: dict[str, list[JSONValue]] = {}
    for dataset in datasets:
        for keyword in wanted:
            value = _json_value(dataset, keyword)
            if value is None:
                continue
            seen = found.setdefault(keyword, [])
            if value not in seen:
                seen.append(value)
    return {keyword: tuple(values) for keyword, values in found.items()}


def read_series_attributes(
    paths: Iterable[Path],
    keywords: Iterable[str],
    *,
    calling_ae: str | None = None,
    called_ae: str | None = None,
    source_host: str | None = None,
) -> list[SeriesAttributes]:
    """One SeriesAttributes per Series Instance UID found in files and folders (recursive).

    Reads headers only (``stop_before_pixels``). Files that are not DICOM, or DICOM files
    without a Series Instance UID (a DICOMDIR), are skipped. ImageCount is the number of
    distinct SOP instances. The derived AE titles and host are what the caller says, since
    files do not carry them.
    """
    wanted = [kw for kw in dict.fromkeys(keywords) if is_dicom_keyword(kw)]
    tags = [
        BaseTag(tag_for_keyword(kw) or 0) for kw in (*wanted, "SeriesInstanceUID", "SOPInstanceUID")
    ]
    series: dict[str, list[Dataset]] = {}
    for path in files_below(paths):
        try:
            dataset = dcmread(path, stop_before_pixels=True, specific_tags=tags)
            series_uid = str(dataset.get("SeriesInstanceUID", "")).strip()
        except (InvalidDicomError, OSError, ValueError, TypeError, EOFError):
            continue  # not a DICOM file: `rules explain` looks at what it can read
        if series_uid:
            series.setdefault(series_uid, []).append(dataset)
    result = []
    for series_uid, datasets in series.items():
        instances = {str(ds.get("SOPInstanceUID", id(ds))) for ds in datasets}
        result.append(
            SeriesAttributes.from_values(
                attributes_from_datasets(datasets, wanted),
                image_count=len(instances),
                calling_ae=calling_ae,
                called_ae=called_ae,
                source_host=source_host,
                series_uid=series_uid,
            )
        )
    return result


def files_below(paths: Iterable[Path]) -> Iterator[Path]:
    """The files given and every file below the folders given, each folder in name order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def _distinct(keyword: str, raw: Any) -> tuple[Value, ...]:
    kind = DERIVED[keyword].kind if keyword in DERIVED else kind_of(keyword)
    items = raw if isinstance(raw, list | tuple) else [raw]
    distinct: list[Value] = []
    for item in items:
        value = _value(item, kind)
        if value is not None and value not in distinct:
            distinct.append(value)
    return tuple(distinct)


def _value(item: Any, kind: Kind) -> Value | None:
    if isinstance(item, list | tuple | MultiValue):
        members = tuple(m for m in (_scalar(member, kind) for member in item) if m is not None)
        if len(members) > 1:
            return members
        return members[0] if members else None
    return _scalar(item, kind)


def _scalar(item: Any, kind: Kind) -> Scalar | None:
    if item is None or isinstance(item, bytes | Dataset):
        return None
    if kind is Kind.NUMBER and not isinstance(item, bool):
        try:
            number = float(item)
        except (TypeError, ValueError):
            pass  # a malformed number stays text, and numeric conditions fail on it
        else:
            return number if math.isfinite(number) else None
    text = str(item).strip(" \x00")
    return text or None


def _json_value(dataset: Dataset, keyword: str) -> JSONValue | None:
    try:
        element = dataset.data_element(keyword)
        if element is None or element.VR == "SQ":
            return None
        value = element.value
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None  # a malformed element reads as missing rather than failing the series
    if isinstance(value, MultiValue | list | tuple):
        members = tuple(m for m in (_json_scalar(v) for v in value) if m is not None)
        if len(members) > 1:
            return members
        return members[0] if members else None
    return _json_scalar(value)


def _json_scalar(value: Any) -> JSONScalar | None:
    if value is None or isinstance(value, bytes | Dataset | bool):
        return None
    if isinstance(value, DSfloat | float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, IS | int):
        return int(value)
    # PersonName, UID, and DA/DT/TM when pydicom converts them: their DICOM text.
    return str(value).strip(" \x00") or None
