"""The report's pictures: the ROC curve and the calibration plot, as PNG bytes.

matplotlib draws with its Agg backend on a Figure of its own (not pyplot's global state),
so no display is needed and nothing leaks between reports.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SIZE = (5.0, 5.0)  # inches
_DPI = 100


def roc_png(classification: Mapping[str, Any], title: str) -> bytes:
    """The ROC curve, the chance diagonal and the operating point at the threshold."""
    figure, axes = _figure()
    roc = classification.get("roc")
    if roc is not None:
        auc = classification.get("auc")
        label = "ROC" if auc is None else f"ROC (AUC {auc:.3f})"
        ci = classification.get("auc_ci95")
        if ci is not None:
            label += f", 95 % CI {ci['low']:.3f}-{ci['high']:.3f}"
        axes.plot(roc["fpr"], roc["tpr"], linewidth=2, label=label)
    else:
        axes.text(0.5, 0.5, "one class only: no ROC curve", ha="center", va="center")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    sensitivity = classification["sensitivity"]["value"]
    specificity = classification["specificity"]["value"]
    if sensitivity is not None and specificity is not None:
        axes.plot(
            [1 - specificity],
            [sensitivity],
            marker="o",
            color="crimson",
            linestyle="none",
            label=f"threshold {classification['threshold']:g}",
        )
    axes.set_xlabel("1 - specificity (false positive rate)")
    axes.set_ylabel("sensitivity (true positive rate)")
    _finish(axes, title)
    return _png(figure)


def calibration_png(classification: Mapping[str, Any], title: str) -> bytes:
    """Observed fraction of positives against the mean predicted probability per bin."""
    figure, axes = _figure()
    calibration = classification.get("calibration") or {}
    predicted = calibration.get("mean_predicted") or []
    observed = calibration.get("fraction_positive") or []
    if predicted:
        brier = calibration.get("brier")
        label = "model" if brier is None else f"model (Brier {brier:.3f})"
        axes.plot(predicted, observed, marker="o", linewidth=2, label=label)
    else:
        axes.text(0.5, 0.5, "one class only: no calibration curve", ha="center", va="center")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("fraction of positive items")
    _finish(axes, title)
    return _png(figure)


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    return figure, axes


def _finish(axes: Any, title: str) -> None:
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_aspect("equal")
    axes.grid(True, alpha=0.3)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
