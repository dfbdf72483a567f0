"""Whether a series lies inside a model's input envelope, and if not, why.

Pure: the source instances' headers and the volume's values in, a list of reasons out,
each naming the attribute, the value and the bound ("SliceThickness 0.625 mm below the
model's minimum 2 mm"). An empty list means inside. The engine checks the headers before
any pixel is decoded (:func:`header_reasons`) and the values after preprocessing, before
inference (:func:`value_reasons`).

A value that differs among the instances is checked for each, and a reason that holds
for only some of them says how many ("in 3 of 40 images"). An attribute the envelope
constrains that a series lacks puts it outside: the model was not validated on "unknown".
Enhanced (multi-frame) images keep slice thickness, pixel spacing and kVp in their
functional groups, where they are looked up when the top level lacks them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.errors import OutsideEnvelopeError
from dicomnode.results.not_run import ENVELOPE_MARKER
from dicomnode.runners.envelope import InputEnvelope, Range, ValueRange
from dicomnode.volume import Volume

# Percentiles are estimated on at most this many voxels, evenly strided over the volume:
# a 300-slice CT has 78 million, and the 1st and 99th percentiles of two million of them
# differ from the exact ones by far less than any envelope's margin.
_VALUE_SAMPLE = 2_000_000
_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


@dataclass(frozen=True, slots=True)
class Scanner:
    """The device that made a series (never patient data): what drift is counted by."""

    manufacturer: str
    model: str
    station: str

    def as_dict(self) -> dict[str, str]:
        return {"manufacturer": self.manufacturer, "model": self.model, "station": self.station}


class EnvelopeVerdict:
    """One series against one model's envelope, as a run goes: headers, then values.

    In ``skip`` mode the first check that finds the series outside raises
    :class:`OutsideEnvelopeError` (the job is refused, not retried); in ``flag`` mode the
    reasons gather and the run goes on.
    """

    def __init__(self, model: str, envelope: InputEnvelope) -> None:
        self.model = model
        self.envelope = envelope
        self.reasons: list[str] = []
        self.scanner = Scanner("", "", "")

    @property
    def outside(self) -> bool:
        return bool(self.reasons)

    def check_headers(self, sources: Sequence[Dataset]) -> None:
        self.scanner = scanner_of(sources)
        self.reasons += header_reasons(self.envelope, sources)
        self._refuse()

    def check_values(self, *volumes: Volume) -> None:
        if self.envelope.values is not None:
            self.reasons += value_reasons(self.envelope.values, volumes)
        self._refuse()

    def error(self) -> str:
        """The job's error: what the API, the web page, the CLI and the report show."""
        return f"{ENVELOPE_MARKER} {self.model!r}: {'; '.join(self.reasons)}"

    def as_dict(self) -> dict[str, Any]:
        """The job timeline's ``envelope`` entry (what /metrics counts, per scanner)."""
        return {
            "model": self.model,
            "action": self.envelope.on_outside,
            "outside": list(self.reasons),
            "scanner": self.scanner.as_dict(),
        }

    def _refuse(self) -> None:
        if self.reasons and self.envelope.on_outside == "skip":
            raise OutsideEnvelopeError(self.error())


def scanner_of(sources: Sequence[Dataset]) -> Scanner:
    """The first instance's Manufacturer, Manufacturer's Model Name and Station Name."""
    first = sources[0] if sources else Dataset()
    return Scanner(
        manufacturer=_text(first.get("Manufacturer")),
        model=_text(first.get("ManufacturerModelName")),
        station=_text(first.get("StationName")),
    )


def header_reasons(envelope: InputEnvelope, sources: Sequence[Dataset]) -> list[str]:
    """Why the series' headers lie outside ``envelope``; empty when they do not."""
    reasons: list[str] = []
    total = len(sources)
    if envelope.modalities is not None:
        reasons += _among(
            "Modality", _observed(sources, "Modality"), total, envelope.modalities, "modalities"
        )
    if envelope.body_parts is not None:
        reasons += _among(
            "BodyPartExamined",
            _observed(sources, "BodyPartExamined"),
            total,
            envelope.body_parts,
            "body parts",
        )
    if envelope.manufacturers is not None:
        reasons += _among(
            "Manufacturer",
            _observed(sources, "Manufacturer"),
            total,
            envelope.manufacturers,
            "manufacturers",
            substring=True,
        )
    numeric = (
        ("SliceThickness", envelope.slice_thickness_mm, "mm"),
        ("PixelSpacing", envelope.pixel_spacing_mm, "mm"),
        ("KVP", envelope.kvp, "kV"),
    )
    for keyword, bounds, unit in numeric:
        if bounds is not None:
            reasons += _within(keyword, _observed(sources, keyword), total, bounds, unit)
    return reasons


def value_reasons(values: ValueRange, volumes: Iterable[Volume]) -> list[str]:
    """Why the series' values lie outside ``values``; empty when they do not.

    ``volumes``: the candidates in order of preference (the source, then the
    preprocessed volume); the first in ``values.units`` is checked. None in those units
    is a reason too: the declaration cannot be checked on this series.
    """
    candidates = list(volumes)
    volume = next((v for v in candidates if v.units == values.units), None)
    if volume is None:
        seen = ", ".join(dict.fromkeys(v.units for v in candidates)) or "none"
        return [
            f"values in {values.units} cannot be checked: the series and its preprocessed "
            f"volume are in {seen}"
        ]
    flat = np.asarray(volume.array).ravel()
    sample = flat[:: max(1, flat.size // _VALUE_SAMPLE)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [f"values in {values.units}: the volume has no finite value"]
    low, high = (
        float(p) for p in np.percentile(sample, [values.low_percentile, values.high_percentile])
    )
    reasons = []
    if values.min is not None and low < values.min:
        reasons.append(
            f"{values.units} {_percentile(values.low_percentile)} percentile {low:.4g} below "
            f"the model's minimum {values.min:g}"
        )
    if values.max is not None and high > values.max:
        reasons.append(
            f"{values.units} {_percentile(values.high_percentile)} percentile {high:.4g} above "
            f"the model's maximum {values.max:g}"
        )
    return reasons


@dataclass(frozen=True, slots=True)
class _Observed:
    """An attribute across the instances: each distinct value and how many carry it."""

    counts: Counter[str]
    missing: int


def _observed(sources: Sequence[Dataset], keyword: str) -> _Observed:
    counts: Counter[str] = Counter()
    missing = 0
    for ds in sources:
        found = {text for value in _values(ds, keyword) for text in _items(value) if text}
        if not found:
            missing += 1
        counts.update(found)
    return _Observed(counts, missing)


def _values(ds: Dataset, keyword: str) -> list[Any]:
    """The attribute at the top level, else in the instance's functional groups."""
    value = _get(ds, keyword)
    if value not in (None, ""):
        return [value]
    found = []
    for groups in _GROUPS:
        for group in ds.get(groups) or ():
            for element in group:
                if element.VR != "SQ":
                    continue
                for item in element.value:
                    inner = _get(item, keyword)
                    if inner not in (None, ""):
                        found.append(inner)
    return found


def _get(ds: Dataset, keyword: str) -> Any:
    """A value as pydicom reads it, else as stored: a DS of "thin" cannot be a float."""
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        raw = ds.get_item(keyword)
        return None if raw is None else raw.value


def _items(value: Any) -> list[str]:
    """A DICOM value's items as text: PixelSpacing's two numbers, a CS value stripped."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [_text(value)]
    return [_text(item) for item in value]


def _among(
    keyword: str,
    observed: _Observed,
    total: int,
    allowed: Sequence[str],
    what: str,
    substring: bool = False,
) -> list[str]:
    listed = ", ".join(allowed)
    reasons = []
    if observed.missing:
        reasons.append(
            f"{keyword} missing{_share(observed.missing, total)}; the model was validated "
            f"on {listed}"
        )
    wanted = [a.casefold() for a in allowed]
    for value, count in sorted(observed.counts.items()):
        folded = value.casefold()
        fits = any(w in folded for w in wanted) if substring else folded in wanted
        if not fits:
            reasons.append(
                f"{keyword} {value}{_share(count, total)} not among the model's {what} {listed}"
            )
    return reasons


def _within(keyword: str, observed: _Observed, total: int, bounds: Range, unit: str) -> list[str]:
    reasons = []
    if observed.missing:
        reasons.append(
            f"{keyword} missing{_share(observed.missing, total)}; the model was validated "
            f"on {_describe(bounds, unit)}"
        )
    for text, count in sorted(observed.counts.items(), key=lambda item: _sort_key(item[0])):
        try:
            number = float(text)
        except ValueError:
            reasons.append(f"{keyword} {text!r}{_share(count, total)} is not a number")
            continue
        value = f"{keyword} {number:g} {unit}{_share(count, total)}"
        if bounds.min is not None and number < bounds.min:
            reasons.append(f"{value} below the model's minimum {bounds.min:g} {unit}")
        if bounds.max is not None and number > bounds.max:
            reasons.append(f"{value} above the model's maximum {bounds.max:g} {unit}")
    return reasons


def _describe(bounds: Range, unit: str) -> str:
    if bounds.min is not None and bounds.max is not None:
        return f"{bounds.min:g} to {bounds.max:g} {unit}"
    if bounds.min is not None:
        return f"at least {bounds.min:g} {unit}"
    return f"at most {bounds.max:g} {unit}"


def _share(count: int, total: int) -> str:
    return "" if count >= total else f" (in {count} of {total} images)"


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _percentile(value: float) -> str:
    number = f"{value:g}"
    if number.endswith("1") and not number.endswith("11"):
        return f"{number}st"
    if number.endswith("2") and not number.endswith("12"):
        return f"{number}nd"
    if number.endswith("3") and not number.endswith("13"):
        return f"{number}rd"
    return f"{number}th"


def _text(value: Any) -> str:
    """A header value as one printable line (a header is data from the network)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text.strip()
