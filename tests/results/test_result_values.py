"""The values a pipeline hands the writers check themselves; the codes are PS3.16's."""

from __future__ import annotations

import math
from typing import Any

import pydicom.sr._concepts_dict as concepts
import pytest

import dicomnode.results
from dicomnode.results import (
    AlgorithmInfo,
    Code,
    Finding,
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
    codes,
)
from dicomnode.results.identity import content_label

ALL_CODES = {name: v for name, v in vars(codes).items() if isinstance(v, Code)}
# UCUM is a grammar, not a list: pydicom's tables hold only the units PS3.16 enumerates.
UNLISTED_UCUM = {"ml": "milliliter", "g": "gram"}


def test_the_package_exports_what_it_says() -> None:
    for name in dicomnode.results.__all__:
        assert hasattr(dicomnode.results, name), name


@pytest.mark.parametrize("name", sorted(ALL_CODES))
def test_each_code_has_its_meaning_in_ps3_16(name: str) -> None:
    code = ALL_CODES[name]
    table = concepts.concepts.get(code.scheme, {})
    meanings = {m for values in table.values() for v, (m, _) in values.items() if v == code.value}
    if code.scheme == "UCUM" and code.value in UNLISTED_UCUM:
        assert (meanings, code.meaning) == (set(), UNLISTED_UCUM[code.value])
    else:
        assert code.meaning in meanings, f"{code} is known as {meanings or 'nothing'}"


@pytest.mark.parametrize(
    "fields",
    [
        ("", "SCT", "Fat"),
        ("55603005", "", "Fat"),
        ("55603005", "SCT", "a\\b"),
        ("55603005", "SCT", " Fat"),
        ("55603005", "SCT", "x" * 65),
        ("55603005", "SCT_TOO_LONG_SCHEME", "Fat"),
    ],
)
def test_a_code_refuses_what_dicom_cannot_hold(fields: tuple[str, str, str]) -> None:
    with pytest.raises(ValueError, match="code"):
        Code(*fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": 0}, "label must be"),
        ({"label": 70000}, "label must be"),
        ({"name": ""}, "segment name"),
        ({"name": "x" * 65}, "segment name"),
        ({"color": (0, 0, 300)}, "color"),
        ({"description": "a\\b"}, "description"),
    ],
)
def test_a_segment_spec_checks_itself(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "label": 1,
        "name": "Fat",
        "category": codes.TISSUE,
        "type": codes.FAT,
        **change,
    }
    with pytest.raises(ValueError, match=message):
        SegmentSpec(**fields)


def test_algorithm_info_defaults_to_the_ai_family() -> None:
    algorithm = AlgorithmInfo("ct-tissue-reference", "1.0")
    assert algorithm.family == Code("123110", "DCM", "Artificial Intelligence")
    with pytest.raises(ValueError, match="algorithm version"):
        AlgorithmInfo("model", "")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_measurement_must_be_finite(value: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        Measurement.volume_ml(value)


def test_a_measurement_unit_must_be_ucum() -> None:
    with pytest.raises(ValueError, match="UCUM"):
        Measurement(codes.VOLUME, 1.0, codes.FAT)


def test_the_named_measurements_have_standard_codes_and_units() -> None:
    assert Measurement.volume_ml(1).unit == Code("ml", "UCUM", "milliliter")
    assert Measurement.mean_hu(1).unit.value == "[hnsf'U]"
    assert Measurement.mean_hu(1).derivation == codes.MEAN
    assert Measurement.max_hu(1).derivation == codes.MAXIMUM
    assert Measurement.suv_max(1).unit.value == "g/ml{SUVbw}"
    assert Measurement.metabolic_volume_ml(1).name.meaning == "Metabolic Volume"
    assert Measurement.total_lesion_glycolysis(1).unit.value == "g"


def test_segment_measurements_keep_a_tuple() -> None:
    listed = [Measurement.volume_ml(1.0)]
    measurements = SegmentMeasurements(1, listed)
    listed.append(Measurement.volume_ml(2.0))
    assert measurements.measurements == (Measurement.volume_ml(1.0),)
    with pytest.raises(ValueError, match="label must be"):
        SegmentMeasurements(0)


@pytest.mark.parametrize(("probability", "present"), [(0.5, True), (0.49, False), (1.0, True)])
def test_a_finding_is_present_at_or_above_its_threshold(probability: float, present: bool) -> None:
    assert Finding(codes.LESION, probability).present is present


@pytest.mark.parametrize("fields", [{"probability": 1.2}, {"probability": -0.1}, {"threshold": 2}])
def test_a_finding_probability_is_within_zero_and_one(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        Finding(codes.LESION, **{"probability": 0.5, **fields})


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("ct-tissue-reference", "CT_TISSUE_REFERE"),
        ("pet suv", "PET SUV"),
        ("---", "___"),
    ],
)
def test_the_content_label_is_a_valid_cs_value(name: str, label: str) -> None:
    assert content_label(AlgorithmInfo(name, "1")) == label
