"""The ``suv`` step against hand calculations, and its refusals (QIBA vendor-neutral SUV)."""

from __future__ import annotations

import math
from datetime import date, datetime, time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from dicomnode.errors import StepError
from dicomnode.pipeline.steps import build_steps, parse_steps, run_steps
from dicomnode.pipeline.steps.dicom_time import parse_da, parse_dt, parse_tm
from dicomnode.pipeline.steps.suv import REQUIRED
from dicomnode.volume import Geometry, SliceRef, Volume

DOSE_BQ = 370e6
WEIGHT_KG = 75.0
HALF_LIFE_S = 6586.2  # F-18
VALUES_BQML = [[[0.0, 1000.0, 5000.0], [12345.6, 25000.0, 3.5]]]

PET_HEADER: dict[str, Any] = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "CorrectedImage": ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"],
    "PatientWeight": WEIGHT_KG,
    "RadionuclideTotalDose": DOSE_BQ,
    "RadionuclideHalfLife": HALF_LIFE_S,
    "SeriesDate": "20240301",
    "SeriesTime": "100000",
    "AcquisitionDate": "20240301",
    "AcquisitionTime": "100000",
    "RadiopharmaceuticalStartTime": "090000.00",
}


def pet(**changes: Any) -> Volume:
    """A 1 x 2 x 3 PET volume in Bq/ml with a header for a 60-minute uptake."""
    metadata = {**PET_HEADER, **changes}
    metadata = {key: value for key, value in metadata.items() if value is not ...}
    return Volume(
        array=np.asarray(VALUES_BQML, dtype=np.float32),
        geometry=Geometry(
            origin=(0.0, 0.0, 0.0),
            row_direction=(1.0, 0.0, 0.0),
            column_direction=(0.0, 1.0, 0.0),
            slice_direction=(0.0, 0.0, 1.0),
            spacing=(3.0, 4.0, 4.0),
        ),
        refs=(SliceRef("1.2.840.10008.5.1.4.1.1.128", "1.2.3.4"),),
        modality="PT",
        units="BQML",
        metadata=metadata,
    )


def hand_suv(uptake_seconds: float) -> npt.NDArray[np.float64]:
    """SUVbw by hand: activity * weight in grams / (dose decayed to the scan)."""
    decayed_dose = DOSE_BQ * 0.5 ** (uptake_seconds / HALF_LIFE_S)
    factor = WEIGHT_KG * 1000.0 / decayed_dose
    return np.asarray(VALUES_BQML, dtype=np.float64) * np.float64(factor)


def suv(volume: Volume) -> Volume:
    (step,) = build_steps(parse_steps([{"kind": "suv"}]))
    result, _ = run_steps(volume, [step])
    return result


def test_suv_matches_a_hand_calculation() -> None:
    result = suv(pet())
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)
    # For orientation: 5000 Bq/ml, 370 MBq, 75 kg, 60 min of F-18 is an SUV of about 1.48.
    assert result.array[0, 0, 2] == pytest.approx(1.4804, abs=1e-4)
    assert result.units == "SUVbw"
    assert result.array.dtype == np.float32
    factor = result.metadata["SUVbwScaleFactor"]
    assert factor == pytest.approx(hand_suv(3600.0)[0, 0, 1] / 1000.0, rel=1e-12)
    assert (result.geometry, result.refs) == (pet().geometry, pet().refs)


def test_series_time_before_the_acquisition_is_the_scan_time() -> None:
    result = suv(pet(SeriesTime="100000", AcquisitionTime="100500"))
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)


def test_a_series_time_after_the_acquisition_falls_back_to_the_earliest_acquisition() -> None:
    # A post-processed series: Series Time is when it was made, not when it was scanned.
    result = suv(pet(SeriesTime="113000", AcquisitionTime="100000"))
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)


def test_the_earliest_of_several_acquisitions_counts() -> None:
    times = ["101500", "100000.000", "103000"]
    result = suv(pet(SeriesTime="120000", AcquisitionTime=times))
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)
    dates = ["20240301", "20240301", "20240229"]
    result = suv(pet(SeriesTime="120000", AcquisitionDate=dates, AcquisitionTime=times))
    # The last pair is the earliest (10:30 the day before): the injection was at 9:00 then.
    np.testing.assert_allclose(result.array, hand_suv(5400.0), rtol=1e-6)


def test_acquisition_dates_and_times_must_pair() -> None:
    with pytest.raises(StepError, match="2 AcquisitionDate values do not pair with 3"):
        suv(pet(AcquisitionDate=["20240301"] * 2, AcquisitionTime=["100000"] * 3))


def test_start_datetime_is_used_when_present_and_spans_midnight() -> None:
    volume = pet(
        SeriesDate="20240302",
        SeriesTime="003000",
        AcquisitionDate="20240302",
        AcquisitionTime="003000",
        RadiopharmaceuticalStartTime="010000",  # ignored: the DateTime is more precise
        RadiopharmaceuticalStartDateTime="20240301233000.000000+0100",
    )
    np.testing.assert_allclose(suv(volume).array, hand_suv(3600.0), rtol=1e-6)


def test_a_start_time_alone_before_midnight_means_the_evening_before() -> None:
    volume = pet(
        SeriesDate="20240302",
        SeriesTime="001500",
        AcquisitionDate="20240302",
        AcquisitionTime="001500",
        RadiopharmaceuticalStartTime="231500",
    )
    np.testing.assert_allclose(suv(volume).array, hand_suv(3600.0), rtol=1e-6)


def test_an_injection_after_the_scan_is_refused() -> None:
    # Minutes of clock skew must not become a 24-hour uptake.
    with pytest.raises(StepError, match=r"injection .* is after the scan"):
        suv(pet(RadiopharmaceuticalStartTime="100500"))
    with pytest.raises(StepError, match=r"injection .* is after the scan"):
        suv(pet(RadiopharmaceuticalStartDateTime="20240301100500"))


@pytest.mark.parametrize("key", REQUIRED)
@pytest.mark.parametrize("absent", [..., None, "", "  ", []])
def test_each_missing_attribute_is_named(key: str, absent: Any) -> None:
    with pytest.raises(StepError, match=rf"^suv needs {key}, which the series lacks"):
        suv(pet(**{key: absent}))


def test_a_missing_injection_time_is_named() -> None:
    with pytest.raises(StepError, match=r"suv needs RadiopharmaceuticalStartTime \(or "):
        suv(pet(RadiopharmaceuticalStartTime=...))
    volume = pet(
        RadiopharmaceuticalStartTime=..., RadiopharmaceuticalStartDateTime="20240301090000"
    )
    np.testing.assert_allclose(suv(volume).array, hand_suv(3600.0), rtol=1e-6)


def test_every_missing_attribute_is_named_at_once() -> None:
    with pytest.raises(
        StepError,
        match="suv needs PatientWeight, RadionuclideTotalDose and RadionuclideHalfLife, "
        "which the series lacks",
    ):
        suv(pet(PatientWeight=..., RadionuclideTotalDose=None, RadionuclideHalfLife=""))


@pytest.mark.parametrize("units", ["CNTS", "GML", "PROPCPS", "bqml"])
def test_units_other_than_bqml_are_refused(units: str) -> None:
    with pytest.raises(StepError, match=f"suv needs Units BQML .* the series has '{units}'"):
        suv(pet(Units=units))


@pytest.mark.parametrize("decay", ["ADMIN", "NONE"])
def test_decay_correction_other_than_start_is_refused(decay: str) -> None:
    # QIBA's vendor-neutral pseudo-code covers START only; ADMIN is not guessed at.
    with pytest.raises(StepError, match=f"suv needs DecayCorrection START .* has '{decay}'"):
        suv(pet(DecayCorrection=decay))


@pytest.mark.parametrize(
    ("corrected", "lacking"),
    [(["ATTN", "SCAT"], "DECY"), ("DECY\\SCAT", "ATTN"), (["NORM"], "ATTN and DECY")],
)
def test_images_not_corrected_for_attenuation_and_decay_are_refused(
    corrected: Any, lacking: str
) -> None:
    with pytest.raises(StepError, match=f"ATTN and DECY; .*, without {lacking}$"):
        suv(pet(CorrectedImage=corrected))


def test_corrected_image_as_one_backslash_separated_string() -> None:
    result = suv(pet(CorrectedImage="ATTN\\DECY\\SCAT"))
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PatientWeight", "heavy", "PatientWeight is 'heavy', not a number"),
        ("PatientWeight", 0.0, "PatientWeight is 0.0; it must be a positive number"),
        ("RadionuclideTotalDose", -1.0, "RadionuclideTotalDose is -1.0; it must be a positive"),
        ("RadionuclideHalfLife", float("nan"), "RadionuclideHalfLife is nan"),
        ("SeriesTime", "25:99", "SeriesTime cannot be read"),
        ("AcquisitionDate", "2024-03-01", "AcquisitionDate cannot be read"),
        ("RadiopharmaceuticalStartTime", "9am", "RadiopharmaceuticalStartTime cannot be read"),
    ],
)
def test_unreadable_values_are_named(key: str, value: Any, message: str) -> None:
    with pytest.raises(StepError, match=message):
        suv(pet(**{key: value}))


def test_numbers_given_as_strings_are_read() -> None:
    result = suv(pet(PatientWeight="75", RadionuclideTotalDose="370000000.0"))
    np.testing.assert_allclose(result.array, hand_suv(3600.0), rtol=1e-6)


def test_suv_twice_is_refused() -> None:
    with pytest.raises(StepError, match="SUVbw already"):
        suv(suv(pet()))


# --- DICOM dates and times -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", time(10)),
        ("1005", time(10, 5)),
        ("100507", time(10, 5, 7)),
        ("100507.5", time(10, 5, 7, 500000)),
        ("100507.123456 ", time(10, 5, 7, 123456)),
        ("10:05:07", time(10, 5, 7)),
        ("235960", time(23, 59, 59, 999999)),
    ],
)
def test_tm(text: str, expected: time) -> None:
    assert parse_tm(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1)),
        ("20240301", datetime(2024, 3, 1)),
        ("20240301090000", datetime(2024, 3, 1, 9)),
        ("20240301090000.25-0500", datetime(2024, 3, 1, 9, 0, 0, 250000)),
    ],
)
def test_dt(text: str, expected: datetime) -> None:
    assert parse_dt(text) == expected


def test_da() -> None:
    assert parse_da("20240301") == parse_da("2024.03.01") == date(2024, 3, 1)
    with pytest.raises(ValueError, match="not a DICOM date"):
        parse_da("20241301x")


def test_decay_factor_is_the_exponential_of_the_half_life() -> None:
    # exp(-ln2 t / T) and 0.5 ** (t / T) are the same; the test above uses the latter.
    assert math.exp(-math.log(2) * 3600 / HALF_LIFE_S) == pytest.approx(0.5 ** (3600 / HALF_LIFE_S))
