"""``suv``: PET activity concentration (Bq/ml) to body-weight SUV, decay corrected.

This is QIBA's vendor-neutral SUV calculation (QIBA FDG-PET/CT technical committee,
"Standardized Uptake Value (SUV)" pseudo-code), for the case it covers without private
attributes:

- Units (0054,1001) must be BQML, Decay Correction (0054,1102) START and Corrected Image
  (0028,0051) must contain ATTN and DECY. Images corrected to the administration time
  (ADMIN) or not at all (NONE) are refused: the pseudo-code has no branch for them, and the
  product does not guess one.
- Scan time: Series Date/Time when it is not after the earliest Acquisition Date/Time of the
  series; otherwise the series was post-processed and its time says when, not what, so the
  earliest acquisition is used (QIBA's fallback where GE's private scan time is absent).
- Injection time: Radiopharmaceutical Start DateTime (0018,1078) when present; otherwise
  Radiopharmaceutical Start Time (0018,1072) on the scan's date; when that is after the
  scan, the evening before if that gives under 12 hours of uptake (an injection before
  midnight, a scan after). An injection after the scan is refused.
- decay = exp(-ln 2 * (scan - injection) / half life); SUVbw = value * weight (g) /
  (total dose (Bq) * decay). Residual activity in the syringe is not subtracted (QIBA notes
  Radionuclide Total Dose does not record it).

The volume's ``metadata`` carries the attributes by keyword, DA/TM/DT as strings and
numbers as numbers. AcquisitionDate/AcquisitionTime may be one value (the earliest) or one
per instance; the earliest pair is used. The output's metadata gains ``SUVbwScaleFactor``,
the factor applied, for results that report it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from dicomnode.errors import StepError
from dicomnode.pipeline.steps.abc import KeepsGrid, StepParams
from dicomnode.pipeline.steps.dicom_time import parse_da, parse_dt, parse_tm
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import Volume

REQUIRED = (
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "PatientWeight",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
)
INJECTION_KEYS = ("RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime")
# A time-only injection later than the scan is taken as the evening before only when that
# gives a plausible uptake; a few minutes of clock skew must not become a 24-hour uptake.
MIDNIGHT_UPTAKE_LIMIT = timedelta(hours=12)

T = TypeVar("T")


class SuvConfig(StepParams):
    """``{kind: suv}``; no parameters: everything comes from the series."""

    kind: Literal["suv"] = "suv"


@dataclass(frozen=True, slots=True)
class SuvInputs:
    """What the calculation reads, parsed and checked."""

    weight_kg: float
    dose_bq: float
    half_life_s: float
    scan: datetime
    injection: datetime

    @property
    def decay(self) -> float:
        elapsed = (self.scan - self.injection).total_seconds()
        return math.exp(-math.log(2) * elapsed / self.half_life_s)

    @property
    def scale_factor(self) -> float:
        """SUVbw per Bq/ml: g/Bq, read as ml per ml assuming 1 g/ml of tissue."""
        return self.weight_kg * 1000.0 / (self.dose_bq * self.decay)


@register(SuvConfig)
@dataclass(frozen=True, slots=True)
class Suv(KeepsGrid):
    params: SuvConfig

    def apply(self, volume: Volume) -> Volume:
        if volume.units == "SUVbw":
            raise StepError("suv: the volume is in SUVbw already (is suv listed twice?)")
        inputs = suv_inputs(volume.metadata)
        factor = inputs.scale_factor
        metadata = {**volume.metadata, "SUVbwScaleFactor": factor}
        # A Python float keeps the float32 array float32 (NEP 50).
        return volume.with_array(volume.array * factor, units="SUVbw", metadata=metadata)


def suv_inputs(metadata: Mapping[str, Any]) -> SuvInputs:
    """The parsed inputs, or a StepError naming every missing attribute or bad value."""
    missing = [key for key in REQUIRED if _absent(metadata.get(key))]
    if all(_absent(metadata.get(key)) for key in INJECTION_KEYS):
        missing.append("RadiopharmaceuticalStartTime (or RadiopharmaceuticalStartDateTime)")
    if missing:
        names = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        raise StepError(f"suv needs {names}, which the series lacks (absent or empty)")
    _check_corrections(metadata)
    scan = _scan_time(metadata)
    injection = _injection_time(metadata, scan)
    if injection > scan:
        raise StepError(
            f"suv: the injection ({injection.isoformat()}) is after the scan "
            f"({scan.isoformat()}); check RadiopharmaceuticalStart(Date)Time"
        )
    return SuvInputs(
        weight_kg=_positive(metadata, "PatientWeight"),
        dose_bq=_positive(metadata, "RadionuclideTotalDose"),
        half_life_s=_positive(metadata, "RadionuclideHalfLife"),
        scan=scan,
        injection=injection,
    )


def _absent(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, list | tuple) and len(value) == 0)


def _check_corrections(metadata: Mapping[str, Any]) -> None:
    units = str(metadata["Units"]).strip()
    if units != "BQML":
        raise StepError(
            f"suv needs Units BQML (activity concentration in Bq/ml); the series has {units!r}"
        )
    decay = str(metadata["DecayCorrection"]).strip()
    if decay != "START":
        raise StepError(
            f"suv needs DecayCorrection START (QIBA's vendor-neutral SUV); the series has "
            f"{decay!r}, which this step does not convert"
        )
    corrected = _values(metadata["CorrectedImage"])
    lacking = [term for term in ("ATTN", "DECY") if term not in corrected]
    if lacking:
        has = "\\".join(corrected)
        raise StepError(
            f"suv needs CorrectedImage to contain ATTN and DECY; the series has {has!r}, "
            f"without {' and '.join(lacking)}"
        )


def _values(value: Any) -> list[str]:
    """A multi-valued string attribute as a list: JSON list or backslash-separated string."""
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value]
    return [item.strip() for item in str(value).split("\\")]


def _positive(metadata: Mapping[str, Any], key: str) -> float:
    value = metadata[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StepError(f"suv: {key} is {value!r}, not a number") from None
    if not (math.isfinite(number) and number > 0):
        raise StepError(f"suv: {key} is {value!r}; it must be a positive number")
    return number


def _parsed(key: str, value: Any, parse: Callable[[str], T]) -> T:
    try:
        return parse(str(value))
    except ValueError as exc:
        raise StepError(f"suv: {key} cannot be read: {exc}") from None


def _scan_time(metadata: Mapping[str, Any]) -> datetime:
    series = datetime.combine(
        _parsed("SeriesDate", metadata["SeriesDate"], parse_da),
        _parsed("SeriesTime", metadata["SeriesTime"], parse_tm),
    )
    dates = _values(metadata["AcquisitionDate"])
    times = _values(metadata["AcquisitionTime"])
    if len(dates) == 1:
        dates = dates * len(times)
    if len(dates) != len(times):
        raise StepError(
            f"suv: {len(dates)} AcquisitionDate values do not pair with "
            f"{len(times)} AcquisitionTime values"
        )
    earliest = min(
        datetime.combine(
            _parsed("AcquisitionDate", day, parse_da), _parsed("AcquisitionTime", at, parse_tm)
        )
        for day, at in zip(dates, times, strict=True)
    )
    return series if series <= earliest else earliest


def _injection_time(metadata: Mapping[str, Any], scan: datetime) -> datetime:
    stamp = metadata.get("RadiopharmaceuticalStartDateTime")
    if not _absent(stamp):
        return _parsed("RadiopharmaceuticalStartDateTime", stamp, parse_dt)
    key = "RadiopharmaceuticalStartTime"
    injection = datetime.combine(scan.date(), _parsed(key, metadata[key], parse_tm))
    evening_before = injection - timedelta(days=1)
    if injection > scan and scan - evening_before <= MIDNIGHT_UPTAKE_LIMIT:
        return evening_before
    return injection
