"""The figures of an evaluation, as pure functions over arrays.

Classification metrics come from scikit-learn (``roc_auc_score``, ``roc_curve``,
``confusion_matrix``, ``calibration_curve``, ``brier_score_loss``), so the numbers are
the ones a reviewer gets from the same library. Dice is counted with numpy: on masks of
millions of voxels it is the F1 score of the voxels, without scikit-learn's copies.

Every ratio carries its counts (``{"value": 0.75, "count": 3, "of": 4}``) and is None where
it is undefined (a sensitivity with no positive item), never a misleading 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

# scikit-learn ships no type hints (import-untyped).
from sklearn.calibration import calibration_curve  # type: ignore[import-untyped]
from sklearn.metrics import (  # type: ignore[import-untyped]
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

Labels = npt.NDArray[np.int_]
Scores = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

# The headers an evaluation is broken down by: a model may hold on one scanner or
# reconstruction and fail on another (the report's "subgroups").
SUBGROUP_KEYS: Final = (
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "SliceThicknessBand",
    "InstitutionName",
)
UNKNOWN: Final = "unknown"
_Z95: Final = 1.959963984540054  # the standard normal's 97.5th percentile


def slice_thickness_band(thickness_mm: float | None) -> str:
    """The band a Slice Thickness falls in: thin, standard, thick and very thick slices."""
    if thickness_mm is None or not math.isfinite(thickness_mm) or thickness_mm <= 0:
        return UNKNOWN
    if thickness_mm <= 1.5:
        return "≤1.5 mm"
    if thickness_mm <= 3.0:
        return "1.5–3 mm"  # noqa: RUF001 - the en dash of a range, as printed
    if thickness_mm <= 5.0:
        return "3–5 mm"  # noqa: RUF001 - the en dash of a range, as printed
    return ">5 mm"


def ratio(count: int, of: int) -> dict[str, Any]:
    """``count / of`` with its counts and a Wilson 95 % interval; value None when ``of`` is 0.

    Wilson's interval stays within 0..1 and is honest at 0 or ``of`` successes, where the
    normal approximation collapses to a point.
    """
    if of == 0:
        return {"value": None, "count": count, "of": of, "ci95": None}
    p = count / of
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * of)) / (1 + z2 / of)
    half = _Z95 * math.sqrt(p * (1 - p) / of + z2 / (4 * of * of)) / (1 + z2 / of)
    return {
        "value": p,
        "count": count,
        "of": of,
        "ci95": [max(0.0, centre - half), min(1.0, centre + half)],
    }


def threshold_metrics(labels: Labels, scores: Scores, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV and the confusion matrix at ``threshold``.

    An item is called positive when its score is at or above the threshold, as the
    pipeline reports a finding present.
    """
    predicted = (scores >= threshold).astype(int)
    tn = fp = fn = tp = 0
    if labels.size:  # scikit-learn refuses an empty set; its matrix is all zeros
        matrix = confusion_matrix(labels, predicted, labels=[0, 1])
        tn, fp, fn, tp = (int(n) for n in matrix.ravel())
    return {
        "threshold": threshold,
        "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
    }


def both_classes(labels: Labels) -> bool:
    return bool(np.any(labels == 1) and np.any(labels == 0))


def auc(labels: Labels, scores: Scores) -> float | None:
    """Area under the ROC curve; None unless both classes are present."""
    return float(roc_auc_score(labels, scores)) if both_classes(labels) else None


def rank_auc(labels: Labels, scores: Scores) -> float:
    """The AUC as the Mann-Whitney U of the scores' average ranks: ``roc_auc_score``'s
    value (ties count one half), at a hundredth of its cost, for the bootstrap's
    thousands of resamples. Both classes must be present."""
    ordered = np.sort(scores)
    ranks = (
        np.searchsorted(ordered, scores, "left") + np.searchsorted(ordered, scores, "right") + 1
    ) / 2
    positives = int(np.count_nonzero(labels == 1))
    negatives = labels.size - positives
    u = float(ranks[labels == 1].sum()) - positives * (positives + 1) / 2
    return u / (positives * negatives)


def auc_bootstrap_ci(
    labels: Labels, scores: Scores, resamples: int, seed: int, level: float = 0.95
) -> dict[str, Any] | None:
    """Percentile bootstrap interval of the AUC: items drawn with replacement.

    A resample with one class only has no AUC and is skipped; ``used`` says how many
    counted. None when the set itself lacks a class, or no resample had both.
    """
    if resamples < 1 or not both_classes(labels):
        return None
    rng = np.random.default_rng(seed)
    n = labels.size
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        sample = labels[index]
        if both_classes(sample):
            values.append(rank_auc(sample, scores[index]))
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {
        "low": float(low),
        "high": float(high),
        "level": level,
        "resamples": resamples,
        "used": len(values),
        "seed": seed,
    }


def roc_points(labels: Labels, scores: Scores) -> dict[str, list[float | None]] | None:
    """The ROC curve's corners; the first threshold (scikit-learn's +inf) is None."""
    if not both_classes(labels):
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [float(v) if math.isfinite(v) else None for v in thresholds],
    }


def calibration(labels: Labels, scores: Scores, bins: int = 10) -> dict[str, Any]:
    """Observed against predicted probability in ``bins`` equal-width bins, and the Brier
    score (the mean squared error of the probabilities; 0 is perfect, 0.25 a coin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.histogram(np.clip(scores, 0.0, 1.0), bins=edges)[0]
    result: dict[str, Any] = {
        "bins": bins,
        "brier": float(brier_score_loss(labels, scores, pos_label=1)),
        "mean_predicted": [],
        "fraction_positive": [],
        "counts": [int(c) for c in counts if c],
    }
    if both_classes(labels):
        observed, predicted = calibration_curve(labels, scores, n_bins=bins, strategy="uniform")
        result["mean_predicted"] = [float(v) for v in predicted]
        result["fraction_positive"] = [float(v) for v in observed]
    return result


def classification_metrics(
    labels: Sequence[int] | Labels,
    scores: Sequence[float] | Scores,
    threshold: float,
    *,
    resamples: int = 1000,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Any]:
    """Everything a classification report shows, for one set of items."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be one value per item")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    metrics: dict[str, Any] = {
        "items": int(y.size),
        "positives": int(np.sum(y == 1)),
        "negatives": int(np.sum(y == 0)),
        "auc": auc(y, s) if y.size else None,
        "auc_ci95": auc_bootstrap_ci(y, s, resamples, seed) if y.size else None,
    }
    metrics.update(threshold_metrics(y, s, threshold))
    if y.size:
        metrics["roc"] = roc_points(y, s)
        metrics["calibration"] = calibration(y, s, bins)
    return metrics


def dice(predicted: Mask, reference: Mask) -> float | None:
    """2|P ∩ R| / (|P| + |R|); None when both are empty (nothing to agree on)."""
    if predicted.shape != reference.shape:
        raise ValueError(f"masks differ in shape: {predicted.shape} and {reference.shape}")
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(reference))
    if total == 0:
        return None
    return 2.0 * int(np.count_nonzero(predicted & reference)) / total


def volume_ml(mask: Mask, slice_voxel_ml: npt.NDArray[np.float64]) -> float:
    """The mask's volume: voxels per slice times each slice's voxel volume (z, y, x)."""
    per_slice = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    return float(np.dot(per_slice, slice_voxel_ml))


def volume_difference(predicted_ml: float, reference_ml: float) -> dict[str, float | None]:
    """Predicted minus reference, in ml and relative to the reference (None if it is 0)."""
    difference = predicted_ml - reference_ml
    return {
        "predicted_ml": predicted_ml,
        "reference_ml": reference_ml,
        "difference_ml": difference,
        "relative_difference": difference / reference_ml if reference_ml > 0 else None,
    }


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """n, mean, standard deviation, median, min and max of the defined values."""
    defined = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if defined.size == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "min": None, "max": None}
    return {
        "n": int(defined.size),
        "mean": float(defined.mean()),
        "sd": float(defined.std(ddof=1)) if defined.size > 1 else None,
        "median": float(np.median(defined)),
        "min": float(defined.min()),
        "max": float(defined.max()),
    }


def by_subgroup(
    groups: Sequence[Mapping[str, str]],
    compute: Callable[[npt.NDArray[np.intp]], dict[str, Any]],
    keys: Sequence[str] = SUBGROUP_KEYS,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``compute`` over the items of each value of each key: ``{key: {value: figures}}``.

    ``groups[i]`` holds item i's values (a missing key is "unknown"); ``compute`` gets the
    indices of a subgroup's items. A subgroup holding the same items as one computed
    already (every item from one manufacturer, say) reuses its figures.
    """
    done: dict[tuple[int, ...], dict[str, Any]] = {}
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for key in keys:
        values = [g.get(key) or UNKNOWN for g in groups]
        result[key] = {}
        for value in sorted(set(values)):
            index = tuple(i for i, v in enumerate(values) if v == value)
            if index not in done:
                done[index] = compute(np.asarray(index, dtype=np.intp))
            result[key][value] = done[index]
    return result
