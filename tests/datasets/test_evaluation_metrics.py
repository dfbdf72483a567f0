"""The metric functions on small arrays whose answers are counted here by hand or numpy."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.datasets.metrics import (
    auc_bootstrap_ci,
    by_subgroup,
    classification_metrics,
    dice,
    rank_auc,
    ratio,
    slice_thickness_band,
    volume_difference,
    volume_ml,
)


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def test_rank_auc_is_the_share_of_pairs_ranked_right_ties_half() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        labels = rng.integers(0, 2, 40)
        labels[:2] = (0, 1)
        scores = rng.integers(0, 6, 40) / 5.0  # few distinct values: many ties
        assert rank_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))


def test_bootstrap_is_seeded_and_skips_resamples_with_one_class() -> None:
    labels = np.array([1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.4, 0.6, 0.95])
    first = auc_bootstrap_ci(labels, scores, 300, seed=3)
    assert first is not None and first == auc_bootstrap_ci(labels, scores, 300, seed=3)
    assert 0 < first["used"] < 300  # a fifth of draws miss the one positive: skipped
    assert first["low"] <= 0.75 <= first["high"]
    assert auc_bootstrap_ci(np.array([1, 1]), np.array([0.2, 0.3]), 100, seed=0) is None


def test_ratios_are_none_where_undefined() -> None:
    figures = classification_metrics([0, 0, 0], [0.1, 0.7, 0.2], 0.5, resamples=10)
    assert figures["auc"] is None and figures["auc_ci95"] is None
    assert figures["sensitivity"] == {"value": None, "count": 0, "of": 0, "ci95": None}
    assert figures["specificity"]["value"] == pytest.approx(2 / 3)
    assert figures["ppv"]["value"] == 0.0 and figures["ppv"]["of"] == 1
    low, high = ratio(0, 4)["ci95"]
    assert low == 0.0 and 0.4 < high < 0.5  # Wilson's interval at 0/4


def test_slice_thickness_bands_close_at_their_upper_edge() -> None:
    bands = [slice_thickness_band(t) for t in (None, 0.6, 1.5, 1.6, 3.0, 5.0, 5.1)]
    assert bands == ["unknown", "≤1.5 mm", "≤1.5 mm", "1.5–3 mm", "1.5–3 mm", "3–5 mm", ">5 mm"]  # noqa: RUF001


def test_dice_and_volumes() -> None:
    a = np.zeros((2, 3, 3), dtype=bool)
    b = np.zeros_like(a)
    assert dice(a, b) is None
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :] = True  # 6 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 10)
    b[1] = True  # 9 more voxels on a slice twice as thick
    assert volume_ml(b, np.array([0.5, 1.0])) == pytest.approx(6 * 0.5 + 9 * 1.0)
    assert volume_difference(3.0, 12.0) == {
        "predicted_ml": 3.0,
        "reference_ml": 12.0,
        "difference_ml": -9.0,
        "relative_difference": -0.75,
    }
    assert volume_difference(1.0, 0.0)["relative_difference"] is None


def test_by_subgroup_fills_unknown_and_reuses_identical_groups() -> None:
    calls = []

    def count(index: np.ndarray) -> dict[str, int]:
        calls.append(tuple(index))
        return {"items": len(index)}

    groups = [{"Manufacturer": "A", "InstitutionName": "X"}, {"Manufacturer": "B"}]
    result = by_subgroup(groups, count, keys=("Manufacturer", "InstitutionName"))
    assert result == {
        "Manufacturer": {"A": {"items": 1}, "B": {"items": 1}},
        "InstitutionName": {"X": {"items": 1}, "unknown": {"items": 1}},
    }
    assert sorted(calls) == [(0,), (1,)]
